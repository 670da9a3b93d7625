#!/bin/sh
# The pandas and R examples of docs/hdf5-layout.md ("Into a data frame"), run as written on a fresh
# result file: both must print the same shapes and value, with subjects as rows.
# Usage: dataframe_examples.sh KETASIM DOC SCENARIO WORKDIR
set -eu
ketasim=$1 doc=$2 scenario=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
cd "$work"
"$ketasim" run "$scenario" --subjects 12 -o results.h5 --quiet
# The code block that follows the line "<!-- example: NAME -->".
extract() {
  awk -v marker="<!-- example: $1 -->" '$0 == marker {found = 1; next} found && /^```/ {if (inside) exit; inside = 1; next} inside' "$doc"
}
extract pandas > example.py
extract r > example.R
test -s example.py && test -s example.R
from_python=$(echo $(/usr/bin/python3 example.py))  # echo without quotes: white space normalised
from_r=$(echo $(Rscript example.R))
echo "pandas: $from_python"
echo "R:      $from_r"
test "$from_python" = "$from_r"
set -- $from_python
# 12 subjects as rows of the frame and of the MADRS matrix (R's transpose undone).
test "$1" = 12 && test "$3" = 12
