#pragma once
// The file driver of the result writer (hdf5_writer.cpp only; HDF5 stays out of the public
// headers): HDF5's POSIX driver "sec2" reduced to what the writer uses, plus two things sec2
// cannot do.
//
// - It keeps the errno of a failed read or write, so that a full disk is reported as "No space
//   left on device" rather than as "driver write request failed".
// - A file can be switched to discarding its writes. HDF5 1.10 cannot recover from a failed close:
//   H5Fclose flushes its caches first, and when that flush fails (a full disk) it frees the file
//   but keeps its ID, on which the library's cleanup at exit then crashes (HDF5 issue HDFFV-11052,
//   fixed in 1.14). A file that is thrown away anyway (a failed or interrupted run) is switched
//   to discarding before it is closed: HDF5 flushes into nothing, the close succeeds, and the
//   writer removes the file. Reads still come from the file, so HDF5 never sees data it did not
//   write. After the first failed system call the file is incomplete, so the driver discards from
//   then on by itself: HDF5's own flushes while the failure unwinds (the destructors of the C++
//   wrapper objects close what they hold) then succeed quietly instead of failing again, and
//   the writer, which checks FileControl::failure after every HDF5 call, throws the file away.
//
// The files it writes are ordinary HDF5 files (no driver information in the superblock), read
// with HDF5's default driver.

#include <hdf5.h>

namespace ketasim::hdf5_file_driver {

// Per file, owned by the writer and alive until the file is closed. Used on the writer's thread
// only, as every HDF5 call is.
struct FileControl {
  bool discard_writes = false;  // set by the writer to throw the file away
  int failure = 0;              // errno of the first failed system call on the file; 0 if none
  bool discarding() const { return discard_writes || failure != 0; }
};

// Makes the files opened with `file_access` (a file access property list) use this driver,
// reporting to `control`.
void use(hid_t file_access, FileControl* control);

}  // namespace ketasim::hdf5_file_driver
