"""The `gateway` command: build, serve, replay, compare, demo. It uses builders and service; nothing
imports it."""
