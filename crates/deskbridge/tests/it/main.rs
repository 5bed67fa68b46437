//! All integration tests, in one binary (link time dominates on small machines).
//! Every test talks HTTP to real servers on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_idp;
mod agent_tokens;
mod backend_attacks;
mod backend_cli;
mod backend_http;
mod check;
mod check_login;
mod cluster;
mod company_limits;
mod console_idp;
mod customer_algorithms;
mod demo;
mod external_refs;
mod gateway_actions;
mod gateway_attacks;
mod gateway_cli;
mod gateway_flow;
mod login_attacks;
mod mobile_doc;
mod serving;
mod store_postgres;
mod support;
mod system_credentials;
mod tls;
mod token_exchange;
mod web;
mod web_sdk;
