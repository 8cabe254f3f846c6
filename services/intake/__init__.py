"""Intake (受理): raw messages of every channel to canonical `complaint.received` events, or dead letters."""
