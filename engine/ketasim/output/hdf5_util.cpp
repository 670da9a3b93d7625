#include "ketasim/output/hdf5_util.hpp"

#include <array>
#include <limits>

namespace ketasim {
namespace {

herr_t record_error_line(unsigned depth, const H5E_error2_t* error, void* client) {
  auto& stack = *static_cast<Hdf5ErrorStack*>(client);
  std::string line = std::string(error->func_name != nullptr ? error->func_name : "?") +
                     "(): " + (error->desc != nullptr ? error->desc : "");
  if (depth == 0) stack.api_call = line;  // walking downward, the API function comes first
  stack.innermost_cause = std::move(line);
  return 0;
}

herr_t record_error_stack(hid_t error_stack, void* client) {
  static_cast<Hdf5ErrorStack*>(client)->clear();
  H5Ewalk2(error_stack, H5E_WALK_DOWNWARD, record_error_line, client);
  return 0;
}

}  // namespace

std::string Hdf5ErrorStack::describe(const H5::Exception& exception, int system_error) const {
  if (system_error != 0) {
    return std::string(std::strerror(system_error)) + " (in " +
           (api_call.empty() ? exception.getFuncName() : api_call) + ")";
  }
  if (api_call.empty()) return exception.getFuncName() + ": " + exception.getDetailMsg();
  if (innermost_cause == api_call) return api_call;
  return api_call + " <- " + innermost_cause;
}

QuietHdf5Errors::QuietHdf5Errors() : stack_(&own_stack_) {
  install();
}

QuietHdf5Errors::QuietHdf5Errors(Hdf5ErrorStack& stack) : stack_(&stack) {
  install();
}

void QuietHdf5Errors::install() {
  if (H5Eget_auto2(H5E_DEFAULT, &previous_handler_, &previous_data_) < 0) {
    previous_handler_ = nullptr;
    previous_data_ = nullptr;
  }
  H5Eset_auto2(H5E_DEFAULT, record_error_stack, stack_);
}

QuietHdf5Errors::~QuietHdf5Errors() {
  H5Eset_auto2(H5E_DEFAULT, previous_handler_, previous_data_);
}

namespace hdf5 {

H5::StrType utf8_text_type() {
  H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  type.setCset(H5T_CSET_UTF8);
  return type;
}

void set_text_attribute(const H5::H5Object& object, const char* name, const std::string& value) {
  const H5::StrType type = utf8_text_type();
  const H5::Attribute attribute = object.createAttribute(name, type, H5::DataSpace(H5S_SCALAR));
  const char* text = value.c_str();
  attribute.write(type, &text);
}

void set_text_array_attribute(const H5::H5Object& object, const char* name, const std::vector<std::string>& values) {
  const H5::StrType type = utf8_text_type();
  const hsize_t size = values.size();
  const H5::Attribute attribute = object.createAttribute(name, type, H5::DataSpace(1, &size));
  std::vector<const char*> texts;
  for (const std::string& value : values) texts.push_back(value.c_str());
  if (!texts.empty()) attribute.write(type, texts.data());
}

void set_float_array_attribute(const H5::H5Object& object, const char* name, const std::vector<double>& values) {
  const hsize_t size = values.size();
  const H5::Attribute attribute = object.createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(1, &size));
  if (!values.empty()) attribute.write(H5::PredType::NATIVE_DOUBLE, values.data());
}

H5::DataSet create_dataset(const H5::Group& parent, const std::string& name, const H5::DataType& file_type,
                           const std::vector<hsize_t>& shape, const std::string& unit, const std::string& description,
                           const H5::DSetCreatPropList& creation, const H5::DSetAccPropList& access) {
  const H5::DataSpace space(static_cast<int>(shape.size()), shape.data());
  H5::DataSet dataset = parent.createDataSet(name, file_type, space, creation, access);
  set_text_attribute(dataset, "units", unit);
  set_text_attribute(dataset, "description", description);
  return dataset;
}

H5::DSetCreatPropList float_creation(const H5::DataType& memory_type, const void* fill_value) {
  H5::DSetCreatPropList creation;
  creation.setFillValue(memory_type, fill_value);
  return creation;
}

H5::DSetCreatPropList nan_filled_doubles() {
  const double fill = std::numeric_limits<double>::quiet_NaN();
  return float_creation(H5::PredType::NATIVE_DOUBLE, &fill);
}

std::vector<hsize_t> column_shape(hsize_t subjects, std::size_t width) {
  return width == 1 ? std::vector<hsize_t>{subjects} : std::vector<hsize_t>{subjects, width};
}

void write_vector(const H5::Group& parent, const std::string& name, const std::vector<double>& values,
                  const std::string& unit, const std::string& description) {
  H5::DataSet dataset = create_dataset(parent, name, H5::PredType::IEEE_F64LE, {values.size()}, unit, description);
  if (!values.empty()) dataset.write(values.data(), H5::PredType::NATIVE_DOUBLE);
  dataset.close();  // closing writes the data: a failure must throw, not be printed by the destructor
}

namespace {

// Rows [first_row, first_row + rows) of a [N] or [N x width] dataset, and the memory they occupy.
struct RowSelection {
  H5::DataSpace file_space;
  H5::DataSpace memory_space;
};

RowSelection select_rows(const H5::DataSet& dataset, hsize_t first_row, hsize_t rows, hsize_t width, bool is_matrix) {
  H5::DataSpace file_space = dataset.getSpace();
  const std::array<hsize_t, 2> start{first_row, 0};
  const std::array<hsize_t, 2> count{rows, width};
  file_space.selectHyperslab(H5S_SELECT_SET, count.data(), start.data());
  return {file_space, H5::DataSpace(is_matrix ? 2 : 1, count.data())};
}

}  // namespace

void write_rows(const H5::DataSet& dataset, const H5::DataType& memory_type, const void* data, hsize_t first_row,
                hsize_t rows, hsize_t width, bool is_matrix) {
  if (rows == 0 || width == 0) return;
  const RowSelection selection = select_rows(dataset, first_row, rows, width, is_matrix);
  dataset.write(data, memory_type, selection.memory_space, selection.file_space);
}

void read_rows(const H5::DataSet& dataset, const H5::DataType& memory_type, void* data, hsize_t first_row, hsize_t rows,
               hsize_t width, bool is_matrix) {
  if (rows == 0 || width == 0) return;
  const RowSelection selection = select_rows(dataset, first_row, rows, width, is_matrix);
  dataset.read(data, memory_type, selection.memory_space, selection.file_space);
}

}  // namespace hdf5
}  // namespace ketasim
