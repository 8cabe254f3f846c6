"""The project's own package: events, settings, Kafka and PostgreSQL plumbing shared by every service."""
