"""The ASGI framework: application, routing, requests, responses, services."""
