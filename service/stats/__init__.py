"""Pure statistics of live evaluation: intervals, paired tests, the offline-vs-online comparison."""
