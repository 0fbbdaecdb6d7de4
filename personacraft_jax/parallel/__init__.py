"""Device meshes and sharding rules (mesh axes `data`, `fsdp`, `tensor`)."""
