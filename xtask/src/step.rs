//! Progress output: every step prints `==> <what>` when it starts and how
//! long it took when it ends, so a slow cold build never looks like a hang;
//! `print_timeline` recaps all steps at the end.

use std::{cell::RefCell, time::Instant};

use anyhow::Result;

thread_local! {
    /// (title, seconds, succeeded) of every finished step, in order.
    static TIMELINE: RefCell<Vec<(String, f64, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Runs one named step, printing its start and its duration.
pub fn step<T>(title: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {title}");
    let started = Instant::now();
    let result = body();
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(_) => println!("    done in {seconds:.1}s"),
        Err(_) => println!("    FAILED after {seconds:.1}s"),
    }
    TIMELINE.with(|timeline| {
        timeline
            .borrow_mut()
            .push((title.to_owned(), seconds, result.is_ok()))
    });
    result
}

/// Prints every step with its duration and the total.
pub fn print_timeline(total_seconds: f64) {
    println!();
    println!("Steps:");
    TIMELINE.with(|timeline| {
        for (title, seconds, succeeded) in timeline.borrow().iter() {
            let mark = if *succeeded { "ok    " } else { "FAILED" };
            println!("  {mark} {seconds:>7.1}s  {title}");
        }
    });
    println!("  total  {total_seconds:>7.1}s");
}
