"""The reporting service: the read model of the project's facts, the rates, the ledger and the bulletin."""
