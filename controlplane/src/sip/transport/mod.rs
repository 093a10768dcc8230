//! SIP transports: UDP, TCP and TLS listeners on named interfaces.
