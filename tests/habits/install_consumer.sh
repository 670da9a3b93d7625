#!/bin/sh
# habits.install_consumer: `cmake --install` gives a tree that can be moved and used. It installs
# the build to a temporary prefix, moves the prefix elsewhere (nothing may point back into the build
# or the first prefix), then
#  - builds tests/consumer, a project of its own that find_package(ketasim)s and links
#    ketasim::engine, and runs it;
#  - checks that the installed ketasim finds its data beside itself: `reproduce --help` names the
#    suite in <prefix>/share/ketasim/reproduction, and `plot` runs <prefix>/share/ketasim's script
#    (replaced by a stub here, so that which script ran is visible), whose ketasim_layout.py names
#    the layout version of `ketasim --version`.
# usage: install_consumer.sh BUILD_DIR SOURCE_DIR WORK_DIR CXX_COMPILER "CXX_FLAGS"
set -u
build=$1 source=$2 work=$3 compiler=$4 flags=$5
. "$source/tests/cli/lib.sh"
rm -rf "$work" && mkdir -p "$work" || exit 1

cmake --install "$build" --prefix "$work/first" > "$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
mv "$work/first" "$work/moved" || exit 1
prefix=$work/moved
for file in bin/ketasim share/ketasim/ketasim_plot.py share/ketasim/ketasim_layout.py \
            share/ketasim/reproduction/eoi_ketamine_venous.yaml \
            share/ketasim/reproduction/scenarios/single_infusion.yaml include/ketasim/base/version.hpp \
            include/ketasim/base/revision.hpp include/ketasim/input/scenario_loader.hpp; do
  [ -f "$prefix/$file" ] || fail "not installed: $file"
done
config=$(find "$prefix" -name ketasimConfig.cmake)
[ -n "$config" ] || fail "no ketasimConfig.cmake under $prefix"
[ -n "$(find "$prefix" -name ketasimConfigVersion.cmake)" ] || fail "no ketasimConfigVersion.cmake under $prefix"
if grep -rq -e "$build" -e "$work/first" "$prefix/lib" "$prefix/include" 2> /dev/null; then
  fail "installed files name the build folder or the first prefix: $(grep -rl -e "$build" -e "$work/first" "$prefix/lib" "$prefix/include")"
fi

# The consumer, built with the compiler and flags of this build (the sanitizer builds need theirs).
if cmake -S "$source/tests/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
     -DCMAKE_CXX_COMPILER="$compiler" -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_BUILD_TYPE=Release > "$work/consumer.log" 2>&1 &&
   cmake --build "$work/consumer" >> "$work/consumer.log" 2>&1; then
  output=$("$work/consumer/consumer" 2>&1)
  case $output in
    *"scenario 'consumer', 1 arm(s), model ketamine_venous"*) echo "consumer: $output" ;;
    *) fail "the consumer printed: $output" ;;
  esac
else
  cat "$work/consumer.log"
  fail "the consumer project did not configure or build against $prefix"
fi

ketasim=$prefix/bin/ketasim
expect 0 "$prefix/share/ketasim/reproduction" reproduce --help
# The plot script's default layout versions (ketasim_layout.py, tools/CMakeLists.txt) are those of
# the header the installed ketasim was compiled with.
layout=$(/usr/bin/python3 -B -c "import sys; sys.path.insert(0, sys.argv[1]); import ketasim_layout; \
print(ketasim_layout.LAYOUT_VERSION)" "$prefix/share/ketasim")
case $("$ketasim" --version) in
  *"HDF5 layout $layout)"*) ;;
  *) fail "share/ketasim/ketasim_layout.py says layout '$layout', but: $("$ketasim" --version)" ;;
esac
cat > "$prefix/share/ketasim/ketasim_plot.py" << 'STUB'
import sys
print("installed plot script ran with", sys.argv[-1])
STUB
expect 0 "installed plot script ran with results.h5" plot results.h5
finish
