//! Shared machinery of echolab's server models.
