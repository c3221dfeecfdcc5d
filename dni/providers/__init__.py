"""Inbound adapters: each turns one provider's call reports into `dni.calls.CallRecord`s."""
