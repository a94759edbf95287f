//! Integration tests, one binary: each test starts its own cluster of real
//! servers on 127.0.0.1 port 0 with temp folders, so tests run in parallel.

mod attacks;
mod cli;
mod crash;
mod durability;
mod faults;
mod files;
mod folders;
mod hardening;
mod healing;
mod http;
mod keys;
mod machines;
mod memory;
mod mount;
mod moves;
mod navigation;
mod peers;
mod pipes;
mod quotas;
mod reads;
mod repl;
mod resume;
mod ring;
mod s3;
mod security;
mod sharing;
mod small;
mod sync;
mod transfers;
mod uploads;
mod util;
mod web;
