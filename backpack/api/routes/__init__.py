"""One module per endpoint group; each exposes `routes(ctx) -> list[Route]`."""
