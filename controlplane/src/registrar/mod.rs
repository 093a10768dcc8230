//! Registrar: users from config, digest-authenticated REGISTER, locations in memory.
