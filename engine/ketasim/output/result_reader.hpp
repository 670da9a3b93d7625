#pragma once
// Reading a ketasim result file (docs/hdf5-layout.md) with errors that name the file and the
// object: shared by `compare` and `export`. Internal to the engine (it needs the HDF5 C++ API).

#include <H5Cpp.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/output/hdf5_util.hpp"  // QuietHdf5Errors, the guard every reader holds

namespace ketasim {

// A numeric dataset read whole, as float64, row-major. A rank-1 dataset has one column.
struct NumberTable {
  std::size_t rows = 0;
  std::size_t columns = 1;
  std::vector<double> values;
  double at(std::size_t row, std::size_t column) const { return values[row * columns + column]; }
};

// Reads the datasets and attributes of one file; every error names the file and the object.
class FileReader {
 public:
  explicit FileReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& object, const std::string& problem) const {
    throw IoError(path_ + ": " + object + ": " + problem);
  }

  static bool has_link(const H5::Group& group, const std::string& name) {
    return H5Lexists(group.getId(), name.c_str(), H5P_DEFAULT) > 0;
  }

  H5::Group open_group(const H5::Group& parent, const std::string& parent_path, const std::string& name) const {
    const std::string object = parent_path + "/" + name;
    if (!has_link(parent, name)) fail(object, "group missing (not a ketasim result file, or a damaged one)");
    try {
      return parent.openGroup(name);
    } catch (const H5::Exception& error) {
      fail(object, "cannot open the group (" + error.getDetailMsg() + ")");
    }
  }

  NumberTable read_numbers(const H5::Group& group, const std::string& group_path, const std::string& name) const {
    const std::string object = group_path + "/" + name;
    if (!has_link(group, name)) fail(object, "dataset missing");
    try {
      const H5::DataSet dataset = group.openDataSet(name);
      const H5T_class_t type_class = dataset.getTypeClass();
      if (type_class != H5T_FLOAT && type_class != H5T_INTEGER)
        fail(object, "expected a numeric dataset (float64 or integer)");
      const H5::DataSpace space = dataset.getSpace();
      const int rank = space.getSimpleExtentNdims();
      if (rank != 1 && rank != 2) fail(object, "expected [N] or [N x width], found rank " + std::to_string(rank));
      hsize_t dims[2] = {0, 1};
      space.getSimpleExtentDims(dims);
      NumberTable table;
      table.rows = static_cast<std::size_t>(dims[0]);
      table.columns = static_cast<std::size_t>(dims[1]);
      table.values.resize(table.rows * table.columns);
      if (!table.values.empty()) dataset.read(table.values.data(), H5::PredType::NATIVE_DOUBLE);
      return table;
    } catch (const H5::Exception& error) {
      fail(object, "cannot read (" + error.getDetailMsg() + ")");
    }
  }

  // A [rows] vector (also accepted: [rows x 1]).
  std::vector<double> read_vector(const H5::Group& group, const std::string& group_path, const std::string& name,
                                  std::optional<std::size_t> rows) const {
    const NumberTable table = read_numbers(group, group_path, name);
    if (table.columns != 1 || (rows && table.rows != *rows))
      fail(group_path + "/" + name, "expected shape [" + (rows ? std::to_string(*rows) : std::string("n")) +
                                        "], found [" + std::to_string(table.rows) + " x " +
                                        std::to_string(table.columns) + "]");
    return table.values;
  }

  // A per-subject dataset of `width` columns: [N] when width is 1, else [N x width].
  std::vector<std::vector<double>> read_columns(const H5::Group& group, const std::string& group_path,
                                                const std::string& name, std::size_t rows, std::size_t width) const {
    const NumberTable table = read_numbers(group, group_path, name);
    if (table.rows != rows || table.columns != width)
      fail(group_path + "/" + name, "expected " + std::to_string(rows) + " subjects x " + std::to_string(width) +
                                        " columns, found [" + std::to_string(table.rows) + " x " +
                                        std::to_string(table.columns) + "]");
    std::vector<std::vector<double>> columns(width, std::vector<double>(rows));
    for (std::size_t row = 0; row < rows; ++row)
      for (std::size_t column = 0; column < width; ++column) columns[column][row] = table.at(row, column);
    return columns;
  }

  std::vector<std::string> read_strings(const H5::H5Object& object, const std::string& object_path,
                                        const std::string& name) const {
    const std::string where = object_path + " attribute " + name;
    if (!object.attrExists(name)) fail(where, "missing");
    try {
      const H5::Attribute attribute = object.openAttribute(name);
      if (attribute.getTypeClass() != H5T_STRING) fail(where, "expected text");
      const H5::StrType type = attribute.getStrType();
      const H5::DataSpace space = attribute.getSpace();
      const auto count = static_cast<std::size_t>(space.getSimpleExtentNpoints());
      std::vector<std::string> texts;
      if (type.isVariableStr()) {
        std::vector<char*> pointers(count, nullptr);
        if (count > 0) attribute.read(type, pointers.data());
        for (const char* text : pointers) texts.emplace_back(text != nullptr ? text : "");
        if (count > 0) H5Dvlen_reclaim(type.getId(), space.getId(), H5P_DEFAULT, pointers.data());
      } else {
        const std::size_t size = type.getSize();
        std::vector<char> buffer(count * size);
        if (count > 0) attribute.read(type, buffer.data());
        for (std::size_t i = 0; i < count; ++i) {
          const std::string text(buffer.data() + i * size, size);
          texts.push_back(text.substr(0, text.find('\0')));
        }
      }
      return texts;
    } catch (const H5::Exception& error) {
      fail(where, "cannot read (" + error.getDetailMsg() + ")");
    }
  }

  std::vector<double> read_attribute_numbers(const H5::H5Object& object, const std::string& object_path,
                                             const std::string& name, bool integers) const {
    const std::string where = object_path + " attribute " + name;
    if (!object.attrExists(name)) fail(where, "missing");
    try {
      const H5::Attribute attribute = object.openAttribute(name);
      const H5T_class_t type_class = attribute.getTypeClass();
      if (type_class != H5T_INTEGER && (integers || type_class != H5T_FLOAT))
        fail(where, integers ? "expected an integer" : "expected numbers");
      const auto count = static_cast<std::size_t>(attribute.getSpace().getSimpleExtentNpoints());
      std::vector<double> values(count);
      if (count > 0) attribute.read(H5::PredType::NATIVE_DOUBLE, values.data());
      return values;
    } catch (const H5::Exception& error) {
      fail(where, "cannot read (" + error.getDetailMsg() + ")");
    }
  }

  std::int64_t read_integer(const H5::H5Object& object, const std::string& object_path, const std::string& name) const {
    const std::vector<double> values = read_attribute_numbers(object, object_path, name, true);
    if (values.size() != 1)
      fail(object_path + " attribute " + name,
           "expected one integer, found " + std::to_string(values.size()) + " values");
    return static_cast<std::int64_t>(values.front());
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The file's layout_version, if this ketasim reads it (kOldestReadableLayoutVersion to
// kLayoutVersion); an IoError naming both otherwise. The one check every C++ reader makes.
inline int read_layout_version(const FileReader& reader, const H5::H5File& file) {
  const std::int64_t version = reader.read_integer(file, "/", "layout_version");
  if (version < kOldestReadableLayoutVersion || version > kLayoutVersion) {
    const std::string oldest = std::to_string(kOldestReadableLayoutVersion), newest = std::to_string(kLayoutVersion);
    const std::string readable =
        kLayoutVersion == kOldestReadableLayoutVersion + 1 ? oldest + " and " + newest : oldest + " to " + newest;
    reader.fail("/ attribute layout_version", "this ketasim reads layout versions " + readable + ", the file has " +
                                                  std::to_string(version) + " (docs/hdf5-layout.md)");
  }
  return static_cast<int>(version);
}

// Opens an HDF5 file for reading (inside a QuietHdf5Errors scope, hdf5_util.hpp): IoError
// "cannot open WHAT 'PATH': ..." for a missing path, a directory or a file that is not HDF5.
inline H5::H5File open_hdf5_for_reading(const std::string& path, const std::string& what) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) throw IoError("cannot open " + what + " '" + path + "': no such file");
  if (!std::filesystem::is_regular_file(path, error))
    throw IoError("cannot open " + what + " '" + path + "': not a regular file");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw IoError("cannot open " + what + " '" + path + "': not an HDF5 file");
  return H5::H5File(path, H5F_ACC_RDONLY);
}

// Opens a result file for reading, as open_hdf5_for_reading; a shard file (`ketasim run --shard`)
// holds some subjects only and no summaries, and is refused with what to do.
inline H5::H5File open_result_file(const std::string& path) {
  H5::H5File file = open_hdf5_for_reading(path, "result file");
  if (file.attrExists("shard_index")) {
    throw IoError("cannot use result file '" + path +
                  "': it is one shard of a split run (`ketasim run --shard`), with some of the subjects and no "
                  "summaries; merge the shards first: ketasim merge SHARD_FILES... -o RESULTS.h5");
  }
  return file;
}

}  // namespace ketasim
