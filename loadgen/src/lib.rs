//! echolab's load generator.
