#pragma once
// NONMEM-style data sets (one row per event: ID, TIME, AMT, RATE, CMT, EVID, MDV, DV, ...), the
// interchange format of NONMEM, nlmixr2/rxode2, mrgsolve and PKNCA. docs/nonmem.md describes both
// directions column by column.
//
// In (input/dosing_table.hpp): a dosing table becomes an arm's per-subject regimen (`doses_from:` in a scenario). Every
// column is honoured or refused with file:line:column; nothing the table says is dropped.
// Out: a result file's doses and simulated observations become a data set (`ketasim export`).
//
// Conventions: ID = subject id + 1 (one arm); TIME in h from the simulation start; AMT in mg;
// RATE in mg/h; CMT = the 1-based number of a model state in the card's list of states
// (`ketasim models show NAME`), so that CMT 1 is ketamine.central in the ketamine cards.

#include <cstddef>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "ketasim/input/dosing_table.hpp"

namespace ketasim {

// What the numbers of an exported data set stand for, to print beside it.
struct ExportLegend {
  std::vector<std::string> arms;      // ARM k is arms[k - 1] (the file's arms, scenario order)
  std::vector<std::string> observed;  // DVID k is observed[k - 1] ("plasma_ketamine (ng/mL)")
  // The compartments the rows can name (the arms' route entries and observed states), by CMT.
  std::vector<std::pair<int, std::string>> compartments;
  bool has_observations = false;    // false: the scenario had no output.observations
  std::size_t failed_subjects = 0;  // left out: a failed subject has no simulated values
};

// Writes arms of a result file as one NONMEM-style data set (docs/nonmem.md): per solved subject,
// its doses (EVID 1) and simulated observations (EVID 0, with DV and IPRED), ordered by TIME, doses
// before observations at the same time. One arm: ID = subject id + 1. Several arms (scenario order):
// ID = k * N + subject id + 1 for the k-th (0-based) of them, N subjects per arm, so that no two
// rows of different arms share an ID; SUBJ = subject id + 1 pairs the same virtual patient across
// arms. An unknown arm is a usage Error naming the file's arms; a file that is not a ketasim result
// of a supported layout is an IoError.
ExportLegend write_nonmem_data(const std::string& result_path, const std::vector<std::string>& arms, std::ostream& out);
ExportLegend write_nonmem_data(const std::string& result_path, const std::string& arm, std::ostream& out);

// The arm names of a result file in scenario order (its root attribute `arms`); at least one.
std::vector<std::string> arms_in_result(const std::string& result_path);

}  // namespace ketasim
