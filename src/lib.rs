//! matchwell
