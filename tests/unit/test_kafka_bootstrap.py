"""KAFKA_BOOTSTRAP_SERVERS of a cluster: FastStream takes a string as one host, so the list is split for it."""

from shared.kafka import bootstrap_list
from shared.settings import Settings


def test_a_clusters_addresses_are_split() -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092, 127.0.0.1:9093,127.0.0.1:9094")
    assert bootstrap_list(settings) == ["127.0.0.1:9092", "127.0.0.1:9093", "127.0.0.1:9094"]


def test_one_address_is_a_list_of_one() -> None:
    assert bootstrap_list(Settings(kafka_bootstrap_servers="127.0.0.1:9092")) == ["127.0.0.1:9092"]
