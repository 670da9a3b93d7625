#pragma once
// NONMEM-style data sets (one row per event: ID, TIME, AMT, RATE, CMT, EVID, MDV, DV, covariates),
// the interchange format of NONMEM, nlmixr2, PKNCA and mrgsolve.
//
// In: a dosing table becomes an arm's per-subject regimen (`doses_from:` in a scenario).
// Out: a result file's doses and simulated observations become a data set (`ketasim export`).
//
// Conventions (docs/nonmem.md): ID = subject id + 1; TIME in hours from the simulation start;
// AMT in mg; RATE in mg/h (0 for a bolus; -2 means "duration in DUR", in h); EVID 1 = dose,
// 0 = observation; CMT 1 = the dosed drug's central compartment for doses, the observation's
// compartment number otherwise; MDV 1 on dose rows; DV in the observation's unit ("." on dose rows).

#include <ostream>
#include <string>
#include <vector>

#include "ketasim/scenario.hpp"

namespace ketasim {

// Reads the dose rows (EVID 1, or every row when there is no EVID column) of a CSV with a header.
// Columns are found by name, case-insensitive: ID, TIME, AMT are required; RATE or DUR for
// infusions. Throws ScenarioError naming file, line and column for anything it cannot use.
DosingTable read_dosing_table(const std::string& path, Route route);

// Writes one arm of a result file as a NONMEM-style data set: per solved subject, its doses (EVID 1,
// MDV 1, AMT, RATE, CMT 1) and its simulated observations (EVID 0, MDV 0, DV, with DVID the
// 1-based index of the observed variable and CMT = DVID + 1), ordered by TIME, then doses before
// observations at the same time; covariates WT, AGE, FEMALE and MADRS0 on every row. Returns the
// observed variables in DVID order. Throws IoError for a file that is not a ketasim result.
std::vector<std::string> write_nonmem_data(const std::string& result_path, const std::string& arm, std::ostream& out);

// The arm names of a result file in scenario order (its root attribute `arms`); at least one.
std::vector<std::string> arms_in_result(const std::string& result_path);

}  // namespace ketasim
