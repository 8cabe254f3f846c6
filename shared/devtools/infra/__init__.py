"""Local, real infrastructure for dev and tests: Apache Kafka (KRaft) from Maven Central jars, embedded PostgreSQL."""
