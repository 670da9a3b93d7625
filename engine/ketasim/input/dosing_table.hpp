#pragma once
// NONMEM-style data sets (one row per event: ID, TIME, AMT, RATE, CMT, EVID, MDV, DV, ...), the
// interchange format of NONMEM, nlmixr2/rxode2, mrgsolve and PKNCA. docs/nonmem.md describes both
// directions column by column.
//
// In: a dosing table becomes an arm's per-subject regimen (`doses_from:` in a scenario). Every
// column is honoured or refused with file:line:column; nothing the table says is dropped.
// Out: output/nonmem_export.hpp.
//
// Conventions: ID = subject id + 1 (one arm); TIME in h from the simulation start; AMT in mg;
// RATE in mg/h; CMT = the 1-based number of a model state in the card's list of states
// (`ketasim models show NAME`), so that CMT 1 is ketamine.central in the ketamine cards.

#include <string>
#include <vector>

#include "ketasim/input/scenario.hpp"

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

}  // namespace ketasim
