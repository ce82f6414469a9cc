//! The burner: `fincorpctl chaos burn --app APP`. It reads CPU demands (in
//! cores, one number per line) from stdin and burns that much CPU across one
//! thread per core, each busy for its share of every 20 ms. It exits when
//! stdin closes. The agent recognises it as APP by its command line.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SLICE: Duration = Duration::from_millis(20);

/// Runs until stdin closes.
pub fn burn(app: &str) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let demand = Arc::new(AtomicU64::new(0f64.to_bits()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (demand, stop) = (demand.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let share = (f64::from_bits(demand.load(Ordering::Relaxed)) / threads as f64)
                        .clamp(0.0, 1.0);
                    let busy = SLICE.mul_f64(share);
                    let start = Instant::now();
                    while start.elapsed() < busy {
                        std::hint::spin_loop();
                    }
                    std::thread::sleep(
                        SLICE
                            .saturating_sub(start.elapsed())
                            .max(Duration::from_micros(50)),
                    );
                }
            })
        })
        .collect();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.trim().parse::<f64>() {
            Ok(cores) if cores >= 0.0 && cores.is_finite() => {
                demand.store(cores.to_bits(), Ordering::Relaxed)
            }
            _ => eprintln!("fincorpctl chaos burn ({app}): ignoring demand {line:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}
