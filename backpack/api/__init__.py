"""HTTP and WebSocket translation only: routes, errors to JSON, credentials, OpenAPI."""
