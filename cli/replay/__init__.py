"""`gateway replay`: a table sent as live traffic, with labels posted back after a delay."""
