"""`load.auto`: one loader for every supported input type, chosen per file."""
