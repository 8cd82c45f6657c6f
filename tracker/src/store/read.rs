//! Read queries behind the REST API.
