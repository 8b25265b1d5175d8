"""Test support: real PostgreSQL and NATS servers (never fakes) and in-process services."""
