"""Benchmarks (`dni bench …`) and what they and the tests share: scratch stores, a private
PostgreSQL server, GeoIP databases, wrk and HTTP helpers."""
