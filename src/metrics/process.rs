//! The `process_*` series every Go operator exports (client_golang's process collector): CPU
//! time, memory, file descriptors, threads and start time, read from `/proc/self` at each
//! scrape, so they cost nothing between scrapes. Unprefixed, as dashboards expect them. Linux
//! only (the image's platform); elsewhere the collector writes nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

#[derive(Debug, Default)]
pub struct ProcessCollector;

#[cfg(target_os = "linux")]
impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use procfs::process::{LimitValue, Process};
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        fn emit(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            metric: &dyn EncodeMetric,
        ) -> std::fmt::Result {
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        }
        let e = &mut encoder;
        // A /proc that cannot be read (a hardened sandbox) leaves the series out rather than
        // failing the scrape of every other metric.
        let Ok(me) = Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let rss = stat.rss as f64 * procfs::page_size() as f64;
            emit(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &ConstGauge::new(rss),
            )?;
            let vsize = stat.vsize as f64;
            emit(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                &ConstGauge::new(vsize),
            )?;
            let threads = stat.num_threads as f64;
            emit(
                e,
                "process_threads",
                "Number of OS threads in the process.",
                &ConstGauge::new(threads),
            )?;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            emit(
                e,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                &ConstCounter::new(cpu),
            )?;
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = boot as f64 + stat.starttime as f64 / ticks;
                emit(
                    e,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    &ConstGauge::new(start),
                )?;
            }
        }
        if let Ok(fds) = me.fd_count() {
            emit(
                e,
                "process_open_fds",
                "Number of open file descriptors.",
                &ConstGauge::new(fds as f64),
            )?;
        }
        if let Ok(limits) = me.limits()
            && let LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            emit(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                &ConstGauge::new(max as f64),
            )?;
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
impl Collector for ProcessCollector {
    fn encode(&self, _encoder: DescriptorEncoder) -> std::fmt::Result {
        Ok(())
    }
}
