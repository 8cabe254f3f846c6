"""Reporting service: the rates, repeats, the ledger and the bulletin, from the project's own facts."""
