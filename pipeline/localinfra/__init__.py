"""Local, real backing services (Kafka, later PostgreSQL/Prometheus/Alertmanager) on loopback for dev and tests."""
