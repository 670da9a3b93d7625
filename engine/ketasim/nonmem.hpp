#pragma once
// NONMEM-style data sets (one row per event: ID, TIME, AMT, RATE, CMT, EVID, MDV, DV, ...), the
// interchange format of NONMEM, nlmixr2/rxode2, mrgsolve and PKNCA. docs/nonmem.md describes both
// directions column by column.
//
// In: a dosing table becomes an arm's per-subject regimen (`doses_from:` in a scenario). Every
// column is honoured or refused with file:line:column; nothing the table says is dropped.
// Out: a result file's doses and simulated observations become a data set (`ketasim export`).
//
// Conventions: ID = subject id + 1 (one arm); TIME in h from the simulation start; AMT in mg;
// RATE in mg/h; CMT = the 1-based number of a model state in the card's list of states
// (`ketasim models show NAME`), so that CMT 1 is ketamine.central in the ketamine cards.

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "ketasim/scenario.hpp"

namespace ketasim {

// NONMEM's compartment number of a model state (0-based index into Model::state_names()).
inline int compartment_number(int state) {
  return state + 1;
}

// Where the doses of a dosing table go: the rule's route, whether they give the card's drug, and
// the compartment that route doses into.
struct TableDoseTarget {
  Route route = Route::iv_infusion;
  bool gives_drug = true;        // false for placebo sessions, which enter no compartment
  int compartment = 0;           // CMT of the route's entry (when gives_drug)
  std::string compartment_name;  // e.g. "ketamine.central"
};

// Reads a dosing table: its dose rows (EVID 1, or every row without an EVID column), each with its
// ADDL additional doses every II hours; observation and other-event rows (EVID 0 and 2) are checked
// and give no dose. `ignored_columns` are columns the scenario lists as ignored on purpose
// (doses_from.ignore_columns); any other column ketasim does not read is an error. Throws
// ScenarioError at file:line:column for anything it cannot honour, IoError for an unreadable file.
DosingTable read_dosing_table(const std::string& path, const TableDoseTarget& target,
                              const std::vector<std::string>& ignored_columns = {});

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
