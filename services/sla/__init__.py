"""The SLA service: deadlines of each stage of a complaint, warnings and breaches (contract 7)."""
