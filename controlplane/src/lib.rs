//! Kordon control plane.
