"""Local stand-ins for remote services, for tests over real sockets (see each module)."""
