#pragma once
// What every HDF5 user of the engine shares (internal to the engine: it needs the HDF5 C++ API):
// the one guard against HDF5's error printing, which also records the error stack so that a
// failure can say what went wrong; the runner of a writer's HDF5 calls that turns their failures
// into IoErrors; and the small helpers the writer defines its attributes and datasets with.

#include <H5Cpp.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/output/hdf5_file_driver.hpp"

namespace ketasim {

// The most useful lines of an HDF5 error stack: the API function that failed and the innermost
// cause, e.g. "H5Fcreate(): unable to create file" and "ketasim_file_open(): Permission denied".
struct Hdf5ErrorStack {
  std::string api_call;
  std::string innermost_cause;

  void clear() {
    api_call.clear();
    innermost_cause.clear();
  }
  // The cause of `exception` for a message: "API call <- innermost cause". `system_error` is the
  // errno of the first failed read or write of the file (hdf5_file_driver.hpp), 0 if none: when
  // set, it is the cause the user can act on (a full disk must say so), and the API call says what
  // failed.
  std::string describe(const H5::Exception& exception, int system_error = 0) const;
};

// The one HDF5 error guard. By default HDF5 prints its error stack to stderr; while a guard is in
// scope, a handler that records the stack instead is installed (the previous handler is restored
// when the guard goes), so that a failure becomes an IoError with a message of ketasim's own. The
// handler runs when the failing C call returns, before the destructors of the C++ wrapper objects
// (whose own C calls would clear the stack) have run. Readers only silence the printing; the
// writer also describes the recorded stack in its errors (Hdf5FileCalls).
class QuietHdf5Errors {
 public:
  QuietHdf5Errors();
  // Records into `stack`, which must outlive the guard.
  explicit QuietHdf5Errors(Hdf5ErrorStack& stack);
  ~QuietHdf5Errors();
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

  // The stack of the last failure reported while the guard was in scope.
  const Hdf5ErrorStack& recorded() const { return *stack_; }
  std::string describe(const H5::Exception& exception, int system_error = 0) const {
    return stack_->describe(exception, system_error);
  }

 private:
  void install();

  Hdf5ErrorStack own_stack_;
  Hdf5ErrorStack* stack_;
  H5E_auto2_t previous_handler_ = nullptr;
  void* previous_data_ = nullptr;
};

// Runs the HDF5 calls on a file being written, each as `calls("define arm 'a'", [&] { ... })`, within
// a QuietHdf5Errors guard recording into errors(): an H5::Exception becomes an IoError
// "PATH: cannot WHAT: CAUSE", the cause from the recorded stack or from the file driver's errno.
class Hdf5FileCalls {
 public:
  // `control`: the file driver's control of the file (hdf5_file_driver.hpp); it must outlive this.
  Hdf5FileCalls(std::string path, const hdf5_file_driver::FileControl& control)
      : path_(std::move(path)), control_(&control) {}

  template <class Action>
  void operator()(const std::string& what, Action&& action) {
    errors_.clear();
    try {
      std::forward<Action>(action)();
    } catch (const H5::Exception& exception) {
      throw failure(what, errors_.describe(exception, control_->failure));
    }
    // A failure that HDF5 did not report to the caller (the destructor of a C++ wrapper object
    // swallows it), or that an earlier call left behind: the file is incomplete either way.
    if (control_->failure != 0 && !control_->discard_writes) throw failure(what, std::strerror(control_->failure));
  }

  // The error for a failure of `what` that HDF5 did not report (a corrupt chunk, say).
  IoError failure(const std::string& what, const std::string& cause) const {
    return IoError(path_ + ": cannot " + what + ": " + cause);
  }
  Hdf5ErrorStack& errors() { return errors_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const hdf5_file_driver::FileControl* control_;
  Hdf5ErrorStack errors_;
};

// Small helpers for defining and filling a result file.
namespace hdf5 {

H5::StrType utf8_text_type();
void set_text_attribute(const H5::H5Object& object, const char* name, const std::string& value);
void set_text_array_attribute(const H5::H5Object& object, const char* name, const std::vector<std::string>& values);
void set_float_array_attribute(const H5::H5Object& object, const char* name, const std::vector<double>& values);

template <class Number>
void set_number_attribute(const H5::H5Object& object, const char* name, const H5::PredType& file_type,
                          const H5::PredType& memory_type, Number value) {
  const H5::Attribute attribute = object.createAttribute(name, file_type, H5::DataSpace(H5S_SCALAR));
  attribute.write(memory_type, &value);
}

// A dataset of `shape` with its "units" and "description" attributes.
H5::DataSet create_dataset(const H5::Group& parent, const std::string& name, const H5::DataType& file_type,
                           const std::vector<hsize_t>& shape, const std::string& unit, const std::string& description,
                           const H5::DSetCreatPropList& creation = H5::DSetCreatPropList::DEFAULT,
                           const H5::DSetAccPropList& access = H5::DSetAccPropList::DEFAULT);

// Dataset creation with a fill value (of `memory_type`); NaN for float64 datasets.
H5::DSetCreatPropList float_creation(const H5::DataType& memory_type, const void* fill_value);
H5::DSetCreatPropList nan_filled_doubles();

// A column of one value per subject is [N]; any other width (including 0) is [N x width].
std::vector<hsize_t> column_shape(hsize_t subjects, std::size_t width);

// A small float64 vector written whole, e.g. the time grid.
void write_vector(const H5::Group& parent, const std::string& name, const std::vector<double>& values,
                  const std::string& unit, const std::string& description);

// Rows [first_row, first_row + rows) of a [N] (is_matrix false, width 1) or [N x width] dataset.
void write_rows(const H5::DataSet& dataset, const H5::DataType& memory_type, const void* data, hsize_t first_row,
                hsize_t rows, hsize_t width, bool is_matrix);
// The same rows read into `data` (rows x width values of `memory_type`).
void read_rows(const H5::DataSet& dataset, const H5::DataType& memory_type, void* data, hsize_t first_row, hsize_t rows,
               hsize_t width, bool is_matrix);

}  // namespace hdf5
}  // namespace ketasim
