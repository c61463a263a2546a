"""kpipe: declarative, exactly-once Kafka sink pipelines."""
__version__ = "0.1.0"
