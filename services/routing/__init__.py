"""Routing (派单): the versioned rules that place a complaint, and the state machine of a case's life."""
