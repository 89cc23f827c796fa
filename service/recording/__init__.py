"""What happens after an answer: shadow variants, disagreement counts and ledger records, on threads of
the worker or in an evaluator process beside it (one protocol, two implementations)."""
