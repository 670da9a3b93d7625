# Workload W1 (see ../w1.yaml) solved the way a deSolve user would: the model as an R function,
# lsoda with its default tolerances, integrated piece by piece between infusion edges (so no
# step straddles a dose edge, as in ketasim and mrgsolve), output every 5 min for 21 days.
#
#   Rscript benchmarks/desolve/w1.R [SUBJECTS] [DISS_EMAX DISS_HILL EC50_S_NG_PER_ML KE0_PER_H S_FRACTION]
#
# The dissociation link's values default to those the card had when this was written; the
# comparison script passes the card's current ones (`ketasim models show ketamine_domino_3cmt`).
#
# Prints subjects per second (one core) and, as a check that the same model is solved, the median
# Cmax and dose-1 peak dissociation over its subjects. Run by benchmarks/compare_desolve.sh.

suppressPackageStartupMessages(library(deSolve))

args <- commandArgs(trailingOnly = TRUE)
subjects <- if (length(args) >= 1) as.integer(args[1]) else 50L
set.seed(1)

# Domino 3-compartment (per-kg V1 times 70 kg; micro constants per hour), effect compartment with
# t1/2ke0 8.3 min, sigmoid Emax on the S share: the card ketamine_domino_3cmt.
link <- if (length(args) >= 6) as.numeric(args[2:6]) else c(24, 1.5, 121, log(2) / (8.3 / 60), 0.5)
typical <- c(V1 = 0.063 * 70, k10 = 0.4381 * 60, k12 = 0.5921 * 60, k21 = 0.2470 * 60,
             k13 = 0.5900 * 60, k31 = 0.0146 * 60, ke0 = link[4])
emax <- link[1]; hill <- link[2]; ec50_s <- link[3] / 1000; s_fraction <- link[5]  # ec50 in mg/L

model <- function(t, y, p) {
  with(as.list(c(y, p)), {
    dA1 <- rate - (k10 + k12 + k13) * A1 + k21 * A2 + k31 * A3
    dA2 <- k12 * A1 - k21 * A2
    dA3 <- k13 * A1 - k31 * A3
    dCe <- ke0 * (A1 / V1 - Ce)
    list(c(dA1, dA2, dA3, dCe))
  })
}

# Mon and Thu 09:00 for 3 weeks, 40 min each; times in hours from Monday 00:00.
starts <- as.vector(outer(c(9, 81), 168 * 0:2, "+"))
duration <- 40 / 60
grid <- seq(0, 21 * 24, by = 5 / 60)
edges <- sort(unique(c(0, starts, starts + duration, max(grid))))

draw_weight <- function() {
  repeat {
    w <- rnorm(1, 80, 15)
    if (w >= 45 && w <= 150) return(w)
  }
}
omega <- sqrt(log(1 + 0.3^2))

simulate_subject <- function() {
  weight <- draw_weight()
  p <- typical
  p["V1"] <- p["V1"] * weight / 70 * exp(rnorm(1, 0, omega))
  p[c("k10", "k12", "k21", "k13", "k31")] <- p[c("k10", "k12", "k21", "k13", "k31")] * (weight / 70)^-0.25
  p["k10"] <- p["k10"] * exp(rnorm(1, 0, omega))
  infusion_rate <- 0.5 * weight / duration  # mg/h
  y <- c(A1 = 0, A2 = 0, A3 = 0, Ce = 0)
  out <- matrix(NA_real_, nrow = length(grid), ncol = 2)
  for (i in seq_len(length(edges) - 1)) {
    a <- edges[i]; b <- edges[i + 1]
    infusing <- any(starts <= a & a < starts + duration)
    times <- unique(c(a, grid[grid > a & grid < b], b))
    sol <- ode(y, times, model, c(p, rate = if (infusing) infusion_rate else 0), method = "lsoda")
    rows <- match(times, grid)
    keep <- !is.na(rows)
    out[rows[keep], ] <- sol[keep, c("A1", "Ce")]
    y <- sol[nrow(sol), c("A1", "A2", "A3", "Ce")]
  }
  plasma <- out[, 1] / p["V1"] * 1000  # ng/mL
  drive <- (s_fraction * out[, 2] / ec50_s)^hill
  dissociation <- emax * drive / (1 + drive)
  first_window <- grid < starts[2]
  c(cmax = max(plasma), peak1 = max(dissociation[first_window]))
}

elapsed <- system.time(results <- t(replicate(subjects, simulate_subject())))[["elapsed"]]
cat(sprintf("deSolve %s lsoda (R function)  %d subjects in %.1f s: %.1f subjects/s; median Cmax %.0f ng/mL, median dose-1 peak dissociation %.1f\n",
            as.character(packageVersion("deSolve")), subjects, elapsed, subjects / elapsed,
            median(results[, "cmax"]), median(results[, "peak1"])))
