"""itas: inference-time architectures as a mesh of ZeroMQ agents."""
