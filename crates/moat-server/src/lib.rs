//! Moat authorization server library.
