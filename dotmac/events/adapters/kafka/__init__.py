"""The Kafka transport (aiokafka). Importing this module needs the ``kafka`` extra."""

from dotmac.events.adapters.kafka.bus import KafkaBus, create_kafka_bus, kafka_headers
from dotmac.events.adapters.kafka_config import KafkaConfig

__all__ = ["KafkaBus", "KafkaConfig", "create_kafka_bus", "kafka_headers"]
