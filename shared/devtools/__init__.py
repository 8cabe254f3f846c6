"""The tools on top: the `complaints` command, the dev stack, simulated traffic, benchmarks and local Kafka and
PostgreSQL. They import the services; the library in `shared` below them imports neither the services nor this."""
