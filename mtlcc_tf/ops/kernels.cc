// CPU kernels of mtlcc_tf (see __init__.py): the fused elementwise parts of the layer-normalised
// ConvLSTM and ConvGRU steps, and reflect padding of the spatial axes, each with its gradient.
//
// A step of `mtlcc_tf.layers.ConvLSTMCell` (normalisation on, no peepholes) is two convolutions
// and then elementwise work: layer normalisation of the four gate pre-activations (each over
// height x width x filters, per-channel scale and offset), sigmoid/tanh, the cell update, layer
// normalisation of the new cell and h = o * tanh(c). A ConvGRU step normalises its two gates,
// convolves r * h, then normalises the candidate and mixes it with h. As TensorFlow graph ops the
// elementwise work is dozens of passes over gate-sized tensors forward and backward, each of
// them memory-bound; here it is two or three passes per kernel, one sample per thread.
//
// Layout: [batch, height, width, groups * filters] for stacked gates (LSTM: input, forget,
// candidate, output; GRU: reset, update), [batch, height, width, filters] for states.
// Statistics are those of `layer_norm` in cells.py: sums in float per channel, then in double
// per group; variance E[x^2] - E[x]^2. Per sample, `stats` holds the mean and inverse standard
// deviation of every normalised group.

#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace mtlcc {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using Array = Eigen::ArrayXf;
using Map = Eigen::Map<Eigen::ArrayXf>;
using ConstMap = Eigen::Map<const Eigen::ArrayXf>;

// An InvalidArgument status whose message is the arguments concatenated.
template <typename... Args>
absl::Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

constexpr int kLstmGates = 4;
constexpr int kGruGates = 2;

// ---------------------------------------------------------------------------------------------
// Layer normalisation pieces shared by the kernels.

// Mean and inverse standard deviation of one group from its per-channel sums.
void GroupStatistics(const float* sums, const float* squares, int64_t channels, double count,
                     float epsilon, float* stat) {
  double sum = 0.0, square = 0.0;
  for (int64_t i = 0; i < channels; ++i) {
    sum += sums[i];
    square += squares[i];
  }
  const double mean = sum / count;
  const double variance = std::max(square / count - mean * mean, 0.0);
  stat[0] = static_cast<float>(mean);
  stat[1] = static_cast<float>(1.0 / std::sqrt(variance + epsilon));
}

// One pass over `x` ([pixels, groups * f] of one sample): statistics of every group.
void Statistics(const float* x, int64_t pixels, int groups, int64_t f, float epsilon,
                float* stat) {
  const int64_t channels = groups * f;
  Array sums = Array::Zero(channels), squares = Array::Zero(channels);
  for (int64_t i = 0; i < pixels; ++i) {
    ConstMap xi(x + i * channels, channels);
    sums += xi;
    squares += xi.square();
  }
  for (int k = 0; k < groups; ++k) {
    GroupStatistics(sums.data() + k * f, squares.data() + k * f, f, double(pixels * f), epsilon,
                    stat + 2 * k);
  }
}

// Per-channel factor and shift with x * factor + shift = (x - mean) * inverse_std * scale +
// offset; without scale and offset, the standardised x.
void Factors(const float* stat, int groups, int64_t f, const float* scale, const float* offset,
             Array* factor, Array* shift) {
  factor->resize(groups * f);
  shift->resize(groups * f);
  for (int k = 0; k < groups; ++k) {
    const float mean = stat[2 * k], inverse_std = stat[2 * k + 1];
    auto fk = factor->segment(k * f, f);
    auto sk = shift->segment(k * f, f);
    if (scale == nullptr) {
      fk.setConstant(inverse_std);
      sk.setConstant(-mean * inverse_std);
    } else {
      fk = inverse_std * ConstMap(scale + k * f, f);
      sk = ConstMap(offset + k * f, f) - mean * fk;
    }
  }
}

// The backward of y = xhat * scale + offset, xhat = (x - mean) * s over groups of one sample:
// a first pass hands every pixel's dy and xhat to `Add`, which accumulates the scale and offset
// gradients and the per-group sums of dxhat and dxhat * xhat; then
//   dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//      = dxhat * alpha + x * beta + gamma        (per channel; `Coefficients`)
// is applied by a second pass (`Apply`) or inline.
class NormBackward {
 public:
  // `d_scale` and `d_offset` receive this sample's parameter gradients ([groups * f] each).
  NormBackward(int groups, int64_t f, const float* stat, const float* scale, float* d_scale,
               float* d_offset)
      : groups_(groups),
        f_(f),
        stat_(stat),
        scale_(scale),
        sum1_(Array::Zero(groups * f)),
        sum2_(Array::Zero(groups * f)),
        d_scale_(d_scale, groups * f),
        d_offset_(d_offset, groups * f) {
    d_scale_.setZero();
    d_offset_.setZero();
  }

  // Channels [begin, begin + n) of one pixel: dy, xhat in; dxhat = dy * scale out (`dxhat` may
  // be `dy`).
  void Add(int64_t begin, int64_t n, const float* dy, const float* xhat, float* dxhat) {
    ConstMap dyv(dy, n), xh(xhat, n);
    d_scale_.segment(begin, n) += dyv * xh;
    d_offset_.segment(begin, n) += dyv;
    Map dx(dxhat, n);
    dx = dyv * ConstMap(scale_ + begin, n);
    sum1_.segment(begin, n) += dx;
    sum2_.segment(begin, n) += dx * xh;
  }

  // After the first pass: per-channel alpha, beta, gamma (`pixels` per sample).
  void Coefficients(int64_t pixels, Array* alpha, Array* beta, Array* gamma) const {
    const double count = double(pixels * f_);
    alpha->resize(groups_ * f_);
    beta->resize(groups_ * f_);
    gamma->resize(groups_ * f_);
    for (int k = 0; k < groups_; ++k) {
      const float mean = stat_[2 * k], s = stat_[2 * k + 1];
      const float mean1 = float(sum1_.segment(k * f_, f_).cast<double>().sum() / count);
      const float mean2 = float(sum2_.segment(k * f_, f_).cast<double>().sum() / count);
      alpha->segment(k * f_, f_).setConstant(s);
      beta->segment(k * f_, f_).setConstant(-s * s * mean2);
      gamma->segment(k * f_, f_).setConstant(-s * mean1 + mean * s * s * mean2);
    }
  }

  // Second pass: `dx` holds dxhat ([pixels, groups * f]) and becomes dx.
  void Apply(int64_t pixels, const float* x, float* dx) const {
    Array alpha, beta, gamma;
    Coefficients(pixels, &alpha, &beta, &gamma);
    const int64_t channels = groups_ * f_;
    for (int64_t i = 0; i < pixels; ++i) {
      Map dxi(dx + i * channels, channels);
      dxi = dxi * alpha + ConstMap(x + i * channels, channels) * beta + gamma;
    }
  }

 private:
  const int groups_;
  const int64_t f_;
  const float* stat_;
  const float* scale_;
  Array sum1_, sum2_;
  Map d_scale_, d_offset_;
};

// Per-sample partial gradients of the scale and offset vectors, added up after the samples.
class ParameterGradients {
 public:
  ParameterGradients(int64_t batch, int64_t channels)
      : batch_(batch), channels_(channels), partial_(2 * batch * channels) {}
  float* scale(int64_t b) { return partial_.data() + b * channels_; }
  float* offset(int64_t b) { return partial_.data() + (batch_ + b) * channels_; }
  // Sums into two outputs [channels].
  void Sum(Tensor* d_scale, Tensor* d_offset) const {
    Map scale(d_scale->flat<float>().data(), channels_);
    Map offset(d_offset->flat<float>().data(), channels_);
    scale.setZero();
    offset.setZero();
    for (int64_t b = 0; b < batch_; ++b) {
      scale += ConstMap(partial_.data() + b * channels_, channels_);
      offset += ConstMap(partial_.data() + (batch_ + b) * channels_, channels_);
    }
  }

 private:
  const int64_t batch_, channels_;
  std::vector<float> partial_;
};

// ---------------------------------------------------------------------------------------------
// Shapes and threads.

struct Dims {
  int64_t batch, pixels, filters;
};

// `wide` is [b, h, w, groups * f]; every `states` tensor [b, h, w, f]; every `wide_vectors`
// [groups * f] and every `state_vectors` [f].
absl::Status CheckShapes(const char* op, const Tensor& wide, int groups,
                         std::initializer_list<const Tensor*> states,
                         std::initializer_list<const Tensor*> wide_vectors,
                         std::initializer_list<const Tensor*> state_vectors, Dims* dims) {
  if (wide.dims() != 4 || wide.dim_size(3) % groups != 0) {
    return InvalidArgument(op, ": gates must be [batch, height, width, ", groups,
                           " * filters], got ", wide.shape().DebugString());
  }
  dims->batch = wide.dim_size(0);
  dims->pixels = wide.dim_size(1) * wide.dim_size(2);
  dims->filters = wide.dim_size(3) / groups;
  const TensorShape state_shape({wide.dim_size(0), wide.dim_size(1), wide.dim_size(2),
                                 dims->filters});
  for (const Tensor* state : states) {
    if (state->shape() != state_shape) {
      return InvalidArgument(op, ": states must be ", state_shape.DebugString(), ", got ",
                             state->shape().DebugString());
    }
  }
  for (const Tensor* vector : wide_vectors) {
    if (vector->shape() != TensorShape({groups * dims->filters})) {
      return InvalidArgument(op, ": gate scale and offset must be [", groups * dims->filters,
                             "], got ", vector->shape().DebugString());
    }
  }
  for (const Tensor* vector : state_vectors) {
    if (vector->shape() != TensorShape({dims->filters})) {
      return InvalidArgument(op, ": scale and offset of a state must be [", dims->filters,
                             "], got ", vector->shape().DebugString());
    }
  }
  return absl::OkStatus();
}

void ForEachSample(OpKernelContext* context, const Dims& dims, int64_t channels_per_pixel,
                   const std::function<void(int64_t)>& work) {
  const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
  // Cost per sample in rough cycles: a few dozen per element and pass.
  const int64_t cost = dims.pixels * channels_per_pixel * 60;
  tensorflow::Shard(workers.num_threads, workers.workers, dims.batch, cost,
                    [&work](int64_t start, int64_t limit) {
                      for (int64_t b = start; b < limit; ++b) work(b);
                    });
}

// Data of sample `b` in a tensor whose samples are `size` floats apart.
const float* At(const Tensor& t, int64_t b, int64_t size) {
  return t.flat<float>().data() + b * size;
}
float* At(Tensor* t, int64_t b, int64_t size) { return t->flat<float>().data() + b * size; }

// The gate pre-activations of sample `b`, projected + recurrent (each [b, h, w, g] of type T,
// `size` = h * w * g values per sample), summed in float into `buffer`: the sum the graph ops
// would take in T and then cast, without those two passes over memory.
template <typename T>
const float* GateSum(const Tensor& projected, const Tensor& recurrent, int64_t b, int64_t size,
                     std::vector<float>* buffer) {
  using TArray = Eigen::Array<T, Eigen::Dynamic, 1>;
  Eigen::Map<const TArray> x(projected.flat<T>().data() + b * size, size);
  Eigen::Map<const TArray> y(recurrent.flat<T>().data() + b * size, size);
  buffer->resize(size);
  Map(buffer->data(), size) = x.template cast<float>() + y.template cast<float>();
  return buffer->data();
}

// Where sample `b`'s float gate gradient goes: straight into a float output, or into `buffer`
// for `StoreGrad` to round into a bfloat16 one.
template <typename T>
float* GradTarget(Tensor* grad, int64_t b, int64_t size, std::vector<float>* buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return At(grad, b, size);
  } else {
    buffer->resize(size);
    return buffer->data();
  }
}

template <typename T>
void StoreGrad(const float* source, Tensor* grad, int64_t b, int64_t size) {
  if constexpr (!std::is_same_v<T, float>) {
    using TArray = Eigen::Array<T, Eigen::Dynamic, 1>;
    Eigen::Map<TArray>(grad->flat<T>().data() + b * size, size) =
        ConstMap(source, size).template cast<T>();
  }
}

// Allocates the outputs, in order, with the given shapes.
absl::Status Allocate(OpKernelContext* context, std::initializer_list<TensorShape> shapes,
                      std::initializer_list<Tensor**> outputs) {
  auto shape = shapes.begin();
  int index = 0;
  for (Tensor** output : outputs) {
    TF_RETURN_IF_ERROR(context->allocate_output(index++, *shape++, output));
  }
  return absl::OkStatus();
}

// An op with an `epsilon` attribute.
class EpsilonOpKernel : public OpKernel {
 public:
  explicit EpsilonOpKernel(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

 protected:
  float epsilon_;
};

// ---------------------------------------------------------------------------------------------
// ConvLSTM.

// Inputs: projected, recurrent [b, h, w, 4f] of type T (the gate pre-activations are their sum),
// cell_prev, gate_scale, gate_offset [4f], cell_scale, cell_offset.
// Outputs: hidden, cell, activations [b, h, w, 4f] (i, f, g, o after sigmoid/tanh), stats.
template <typename T>
class LnLstmForwardOp : public EpsilonOpKernel {
 public:
  using EpsilonOpKernel::EpsilonOpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& projected = context->input(0);
    const Tensor& recurrent = context->input(1);
    const Tensor& cell_prev = context->input(2);
    OP_REQUIRES(context, recurrent.shape() == projected.shape(),
                InvalidArgument("MtlccLnLstmForward: projected and recurrent gates must have one "
                                "shape, got ", projected.shape().DebugString(), " and ",
                                recurrent.shape().DebugString()));
    const Tensor& gates = projected;
    Dims dims;
    OP_REQUIRES_OK(context, CheckShapes("MtlccLnLstmForward", gates, kLstmGates, {&cell_prev},
                                        {&context->input(3), &context->input(4)},
                                        {&context->input(5), &context->input(6)}, &dims));
    const int64_t p = dims.pixels, f = dims.filters, g = kLstmGates * f;
    Tensor *hidden, *cell, *activations, *stats;
    OP_REQUIRES_OK(context, Allocate(context,
                                     {cell_prev.shape(), cell_prev.shape(), gates.shape(),
                                      TensorShape({dims.batch, 2 * (kLstmGates + 1)})},
                                     {&hidden, &cell, &activations, &stats}));
    const float* gate_scale = context->input(3).flat<float>().data();
    const float* gate_offset = context->input(4).flat<float>().data();
    const float* cell_scale = context->input(5).flat<float>().data();
    const float* cell_offset = context->input(6).flat<float>().data();
    // False where no op consumes them (an inference graph); always true when executing eagerly.
    const bool keep_activations = context->output_required(2);

    ForEachSample(context, dims, g, [&](int64_t b) {
      std::vector<float> gate_sum;
      const float* z = GateSum<T>(projected, recurrent, b, p * g, &gate_sum);
      const float* c_prev = At(cell_prev, b, p * f);
      float* act = At(activations, b, p * g);
      float* h = At(hidden, b, p * f);
      float* c = At(cell, b, p * f);
      float* stat = At(stats, b, 2 * (kLstmGates + 1));

      // Pass 1: gate statistics.
      Statistics(z, p, kLstmGates, f, epsilon_, stat);
      Array factor, shift;
      Factors(stat, kLstmGates, f, gate_scale, gate_offset, &factor, &shift);
      // Pass 2: normalised gates, activations, raw new cell and its statistics. Without a
      // backward pass (inference) nothing reads the activations: they go to a scratch row, and
      // pass 3 computes the output gate again from the gates.
      Array cell_sums = Array::Zero(f), cell_squares = Array::Zero(f), scratch(g);
      for (int64_t i = 0; i < p; ++i) {
        Map a(keep_activations ? act + i * g : scratch.data(), g);
        a = ConstMap(z + i * g, g) * factor + shift;
        a.head(2 * f) = a.head(2 * f).logistic();
        a.segment(2 * f, f) = a.segment(2 * f, f).tanh();
        a.tail(f) = a.tail(f).logistic();
        Map c_raw(c + i * f, f);
        c_raw = a.segment(f, f) * ConstMap(c_prev + i * f, f) + a.head(f) * a.segment(2 * f, f);
        cell_sums += c_raw;
        cell_squares += c_raw.square();
      }
      const Array output_factor = factor.tail(f), output_shift = shift.tail(f);
      float* cell_stat = stat + 2 * kLstmGates;
      GroupStatistics(cell_sums.data(), cell_squares.data(), f, double(p * f), epsilon_,
                      cell_stat);
      Factors(cell_stat, 1, f, cell_scale, cell_offset, &factor, &shift);
      // Pass 3: normalised cell and hidden state.
      for (int64_t i = 0; i < p; ++i) {
        Map ci(c + i * f, f);
        ci = ci * factor + shift;
        if (keep_activations) {
          Map(h + i * f, f) = ConstMap(act + i * g + 3 * f, f) * ci.tanh();
        } else {
          const auto o = (ConstMap(z + i * g + 3 * f, f) * output_factor + output_shift).logistic();
          Map(h + i * f, f) = o * ci.tanh();
        }
      }
    });
  }
};

// Inputs: grad_hidden, grad_cell, projected, recurrent (type T), cell_prev, gate_scale,
// cell_scale, activations, cell, stats. Outputs: grad_gates (type T: the gradient of both
// projected and recurrent), grad_cell_prev, grad_gate_scale, grad_gate_offset,
// grad_cell_scale, grad_cell_offset.
template <typename T>
class LnLstmBackwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& grad_hidden = context->input(0);
    const Tensor& grad_cell = context->input(1);
    const Tensor& projected = context->input(2);
    const Tensor& recurrent = context->input(3);
    const Tensor& cell_prev = context->input(4);
    const Tensor& activations = context->input(7);
    const Tensor& cell = context->input(8);
    const Tensor& stats = context->input(9);
    OP_REQUIRES(context, recurrent.shape() == projected.shape(),
                InvalidArgument("MtlccLnLstmBackward: projected and recurrent gates must have one "
                                "shape"));
    const Tensor& gates = projected;
    Dims dims;
    OP_REQUIRES_OK(context,
                   CheckShapes("MtlccLnLstmBackward", gates, kLstmGates,
                               {&cell_prev, &grad_hidden, &grad_cell, &cell}, {&context->input(5)},
                               {&context->input(6)}, &dims));
    OP_REQUIRES(context, activations.shape() == gates.shape(),
                InvalidArgument("activations must be shaped like gates"));
    OP_REQUIRES(context, stats.shape() == TensorShape({dims.batch, 2 * (kLstmGates + 1)}),
                InvalidArgument("stats must be [batch, ", 2 * (kLstmGates + 1), "]"));
    const int64_t n = dims.batch, p = dims.pixels, f = dims.filters, g = kLstmGates * f;
    Tensor *grad_gates, *grad_cell_prev, *grad_gate_scale, *grad_gate_offset, *grad_cell_scale,
        *grad_cell_offset;
    OP_REQUIRES_OK(context, Allocate(context,
                                     {gates.shape(), cell_prev.shape(), TensorShape({g}),
                                      TensorShape({g}), TensorShape({f}), TensorShape({f})},
                                     {&grad_gates, &grad_cell_prev, &grad_gate_scale,
                                      &grad_gate_offset, &grad_cell_scale, &grad_cell_offset}));
    ParameterGradients gate_parameters(n, g), cell_parameters(n, f);
    const float* gate_scale = context->input(5).flat<float>().data();
    const float* cell_scale = context->input(6).flat<float>().data();

    ForEachSample(context, dims, g, [&](int64_t b) {
      const float* dh = At(grad_hidden, b, p * f);
      const float* dc_next = At(grad_cell, b, p * f);
      std::vector<float> gate_sum, grad_buffer;
      const float* z = GateSum<T>(projected, recurrent, b, p * g, &gate_sum);
      const float* c_prev = At(cell_prev, b, p * f);
      const float* act = At(activations, b, p * g);
      const float* c = At(cell, b, p * f);
      const float* stat = At(stats, b, 2 * (kLstmGates + 1));
      const float* cell_stat = stat + 2 * kLstmGates;
      float* dz = GradTarget<T>(grad_gates, b, p * g, &grad_buffer);
      float* dc_prev = At(grad_cell_prev, b, p * f);
      NormBackward gate_norm(kLstmGates, f, stat, gate_scale, gate_parameters.scale(b),
                             gate_parameters.offset(b));
      NormBackward cell_norm(1, f, cell_stat, cell_scale, cell_parameters.scale(b),
                             cell_parameters.offset(b));
      // Standardised gates and cell: x * factor + shift.
      Array z_factor, z_shift, c_factor, c_shift;
      Factors(stat, kLstmGates, f, nullptr, nullptr, &z_factor, &z_shift);
      Factors(cell_stat, 1, f, nullptr, nullptr, &c_factor, &c_shift);
      // Per-pixel temporaries, allocated once per sample rather than once per pixel.
      Array t(f), c_raw(f), c_hat(f), z_hat(3 * f);

      // Pass A: into the normalised cell (dc_hat, kept in dc_prev) and the output gate.
      for (int64_t i = 0; i < p; ++i) {
        ConstMap a(act + i * g, g), dhi(dh + i * f, f);
        t = ConstMap(c + i * f, f).tanh();
        const auto o = a.tail(f);
        float* dct = dc_prev + i * f;
        Map(dct, f) = ConstMap(dc_next + i * f, f) + dhi * o * (1.0f - t.square());
        c_raw = a.segment(f, f) * ConstMap(c_prev + i * f, f) + a.head(f) * a.segment(2 * f, f);
        c_hat = c_raw * c_factor + c_shift;
        cell_norm.Add(0, f, dct, c_hat.data(), dct);

        float* dzo = dz + i * g + 3 * f;
        Map(dzo, f) = dhi * t * o * (1.0f - o);
        z_hat.head(f) = ConstMap(z + i * g + 3 * f, f) * z_factor.tail(f) + z_shift.tail(f);
        gate_norm.Add(3 * f, f, dzo, z_hat.data(), dzo);
      }
      Array alpha, beta, gamma;
      cell_norm.Coefficients(p, &alpha, &beta, &gamma);

      // Pass B: through the cell's normalisation to c_prev and the input, forget, candidate.
      for (int64_t i = 0; i < p; ++i) {
        ConstMap a(act + i * g, g), cpi(c_prev + i * f, f);
        const auto in = a.head(f), fg = a.segment(f, f), cand = a.segment(2 * f, f);
        Map dci(dc_prev + i * f, f);
        c_raw = fg * cpi + in * cand;
        c_raw = dci * alpha + c_raw * beta + gamma;  // now the gradient into the raw cell
        dci = c_raw * fg;
        float* dzi = dz + i * g;
        Map(dzi, f) = c_raw * cand * in * (1.0f - in);
        Map(dzi + f, f) = c_raw * cpi * fg * (1.0f - fg);
        Map(dzi + 2 * f, f) = c_raw * in * (1.0f - cand.square());
        z_hat = ConstMap(z + i * g, 3 * f) * z_factor.head(3 * f) + z_shift.head(3 * f);
        gate_norm.Add(0, 3 * f, dzi, z_hat.data(), dzi);
      }
      // Pass C: through the gates' normalisation.
      gate_norm.Apply(p, z, dz);
      StoreGrad<T>(dz, grad_gates, b, p * g);
    });
    gate_parameters.Sum(grad_gate_scale, grad_gate_offset);
    cell_parameters.Sum(grad_cell_scale, grad_cell_offset);
  }
};

// ---------------------------------------------------------------------------------------------
// ConvGRU: two kernels, because the candidate's convolution needs r * h between them.

// Checks that the two parts of a pre-activation, projected and recurrent, have one shape.
absl::Status CheckParts(const char* op, const Tensor& projected, const Tensor& recurrent) {
  if (recurrent.shape() != projected.shape()) {
    return InvalidArgument(op, ": projected and recurrent parts must have one shape, got ",
                           projected.shape().DebugString(), " and ",
                           recurrent.shape().DebugString());
  }
  return absl::OkStatus();
}

// Inputs: projected, recurrent [b, h, w, 2f] of type T (reset, update; the gate
// pre-activations are their sum), hidden, gate_scale, gate_offset [2f].
// Outputs: update u, reset_hidden r * h, reset r, stats.
template <typename T>
class LnGruGatesForwardOp : public EpsilonOpKernel {
 public:
  using EpsilonOpKernel::EpsilonOpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& projected = context->input(0);
    const Tensor& recurrent = context->input(1);
    const Tensor& hidden = context->input(2);
    OP_REQUIRES_OK(context, CheckParts("MtlccLnGruGatesForward", projected, recurrent));
    const Tensor& gates = projected;
    Dims dims;
    OP_REQUIRES_OK(context, CheckShapes("MtlccLnGruGatesForward", gates, kGruGates, {&hidden},
                                        {&context->input(3), &context->input(4)}, {}, &dims));
    const int64_t p = dims.pixels, f = dims.filters, g = kGruGates * f;
    Tensor *update, *reset_hidden, *reset, *stats;
    OP_REQUIRES_OK(context, Allocate(context,
                                     {hidden.shape(), hidden.shape(), hidden.shape(),
                                      TensorShape({dims.batch, 2 * kGruGates})},
                                     {&update, &reset_hidden, &reset, &stats}));
    const float* scale = context->input(3).flat<float>().data();
    const float* offset = context->input(4).flat<float>().data();

    ForEachSample(context, dims, g, [&](int64_t b) {
      std::vector<float> gate_sum;
      const float* z = GateSum<T>(projected, recurrent, b, p * g, &gate_sum);
      const float* h = At(hidden, b, p * f);
      float* u = At(update, b, p * f);
      float* rh = At(reset_hidden, b, p * f);
      float* r = At(reset, b, p * f);
      float* stat = At(stats, b, 2 * kGruGates);
      Statistics(z, p, kGruGates, f, epsilon_, stat);
      Array factor, shift;
      Factors(stat, kGruGates, f, scale, offset, &factor, &shift);
      for (int64_t i = 0; i < p; ++i) {
        Map ri(r + i * f, f), ui(u + i * f, f);
        ri = (ConstMap(z + i * g, f) * factor.head(f) + shift.head(f)).logistic();
        ui = (ConstMap(z + i * g + f, f) * factor.tail(f) + shift.tail(f)).logistic();
        Map(rh + i * f, f) = ri * ConstMap(h + i * f, f);
      }
    });
  }
};

// Inputs: grad_update, grad_reset_hidden, projected, recurrent (type T), hidden, gate_scale,
// reset, update, stats. Outputs: grad_gates (type T: the gradient of both projected and
// recurrent), grad_hidden, grad_gate_scale, grad_gate_offset.
template <typename T>
class LnGruGatesBackwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& grad_update = context->input(0);
    const Tensor& grad_reset_hidden = context->input(1);
    const Tensor& projected = context->input(2);
    const Tensor& recurrent = context->input(3);
    const Tensor& hidden = context->input(4);
    const Tensor& reset = context->input(6);
    const Tensor& update = context->input(7);
    const Tensor& stats = context->input(8);
    OP_REQUIRES_OK(context, CheckParts("MtlccLnGruGatesBackward", projected, recurrent));
    const Tensor& gates = projected;
    Dims dims;
    OP_REQUIRES_OK(context, CheckShapes("MtlccLnGruGatesBackward", gates, kGruGates,
                                        {&grad_update, &grad_reset_hidden, &hidden, &reset,
                                         &update},
                                        {&context->input(5)}, {}, &dims));
    OP_REQUIRES(context, stats.shape() == TensorShape({dims.batch, 2 * kGruGates}),
                InvalidArgument("stats must be [batch, ", 2 * kGruGates, "]"));
    const int64_t n = dims.batch, p = dims.pixels, f = dims.filters, g = kGruGates * f;
    Tensor *grad_gates, *grad_hidden, *grad_scale, *grad_offset;
    OP_REQUIRES_OK(context, Allocate(context,
                                     {gates.shape(), hidden.shape(), TensorShape({g}),
                                      TensorShape({g})},
                                     {&grad_gates, &grad_hidden, &grad_scale, &grad_offset}));
    ParameterGradients parameters(n, g);
    const float* scale = context->input(5).flat<float>().data();

    ForEachSample(context, dims, g, [&](int64_t b) {
      const float* du = At(grad_update, b, p * f);
      const float* drh = At(grad_reset_hidden, b, p * f);
      std::vector<float> gate_sum, grad_buffer;
      const float* z = GateSum<T>(projected, recurrent, b, p * g, &gate_sum);
      const float* h = At(hidden, b, p * f);
      const float* r = At(reset, b, p * f);
      const float* u = At(update, b, p * f);
      const float* stat = At(stats, b, 2 * kGruGates);
      float* dz = GradTarget<T>(grad_gates, b, p * g, &grad_buffer);
      float* dh = At(grad_hidden, b, p * f);
      NormBackward norm(kGruGates, f, stat, scale, parameters.scale(b), parameters.offset(b));
      Array z_factor, z_shift;
      Factors(stat, kGruGates, f, nullptr, nullptr, &z_factor, &z_shift);
      Array z_hat(g);
      for (int64_t i = 0; i < p; ++i) {
        ConstMap ri(r + i * f, f), ui(u + i * f, f), drhi(drh + i * f, f);
        Map(dh + i * f, f) = drhi * ri;
        float* dzi = dz + i * g;
        Map(dzi, f) = drhi * ConstMap(h + i * f, f) * ri * (1.0f - ri);
        Map(dzi + f, f) = ConstMap(du + i * f, f) * ui * (1.0f - ui);
        z_hat = ConstMap(z + i * g, g) * z_factor + z_shift;
        norm.Add(0, g, dzi, z_hat.data(), dzi);
      }
      norm.Apply(p, z, dz);
      StoreGrad<T>(dz, grad_gates, b, p * g);
    });
    parameters.Sum(grad_scale, grad_offset);
  }
};

// Inputs: projected, recurrent [b, h, w, f] of type T (the candidate is their sum), hidden,
// update, scale, offset [f].
// Outputs: new hidden u * h + (1 - u) * tanh(LN(candidate)), tanh_candidate, stats.
template <typename T>
class LnGruOutputForwardOp : public EpsilonOpKernel {
 public:
  using EpsilonOpKernel::EpsilonOpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& projected = context->input(0);
    const Tensor& recurrent = context->input(1);
    const Tensor& hidden = context->input(2);
    const Tensor& update = context->input(3);
    OP_REQUIRES_OK(context, CheckParts("MtlccLnGruOutputForward", projected, recurrent));
    const Tensor& candidate = projected;
    Dims dims;
    OP_REQUIRES_OK(context, CheckShapes("MtlccLnGruOutputForward", candidate, 1,
                                        {&hidden, &update},
                                        {&context->input(4), &context->input(5)}, {}, &dims));
    const int64_t p = dims.pixels, f = dims.filters;
    Tensor *new_hidden, *tanh_candidate, *stats;
    OP_REQUIRES_OK(context, Allocate(context,
                                     {hidden.shape(), hidden.shape(), TensorShape({dims.batch, 2})},
                                     {&new_hidden, &tanh_candidate, &stats}));
    const float* scale = context->input(4).flat<float>().data();
    const float* offset = context->input(5).flat<float>().data();

    ForEachSample(context, dims, f, [&](int64_t b) {
      std::vector<float> candidate_sum;
      const float* c = GateSum<T>(projected, recurrent, b, p * f, &candidate_sum);
      const float* h = At(hidden, b, p * f);
      const float* u = At(update, b, p * f);
      float* hn = At(new_hidden, b, p * f);
      float* t = At(tanh_candidate, b, p * f);
      float* stat = At(stats, b, 2);
      Statistics(c, p, 1, f, epsilon_, stat);
      Array factor, shift;
      Factors(stat, 1, f, scale, offset, &factor, &shift);
      for (int64_t i = 0; i < p; ++i) {
        Map ti(t + i * f, f);
        ti = (ConstMap(c + i * f, f) * factor + shift).tanh();
        ConstMap ui(u + i * f, f);
        Map(hn + i * f, f) = ui * ConstMap(h + i * f, f) + (1.0f - ui) * ti;
      }
    });
  }
};

// Inputs: grad_new_hidden, projected, recurrent (type T), hidden, update, scale,
// tanh_candidate, stats. Outputs: grad_candidate (type T: the gradient of both parts),
// grad_hidden, grad_update, grad_scale, grad_offset.
template <typename T>
class LnGruOutputBackwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& grad_new_hidden = context->input(0);
    const Tensor& projected = context->input(1);
    const Tensor& recurrent = context->input(2);
    const Tensor& hidden = context->input(3);
    const Tensor& update = context->input(4);
    const Tensor& tanh_candidate = context->input(6);
    const Tensor& stats = context->input(7);
    OP_REQUIRES_OK(context, CheckParts("MtlccLnGruOutputBackward", projected, recurrent));
    const Tensor& candidate = projected;
    Dims dims;
    OP_REQUIRES_OK(context, CheckShapes("MtlccLnGruOutputBackward", candidate, 1,
                                        {&grad_new_hidden, &hidden, &update, &tanh_candidate},
                                        {&context->input(5)}, {}, &dims));
    OP_REQUIRES(context, stats.shape() == TensorShape({dims.batch, 2}),
                InvalidArgument("stats must be [batch, 2]"));
    const int64_t n = dims.batch, p = dims.pixels, f = dims.filters;
    Tensor *grad_candidate, *grad_hidden, *grad_update, *grad_scale, *grad_offset;
    OP_REQUIRES_OK(context, Allocate(context,
                                     {candidate.shape(), hidden.shape(), hidden.shape(),
                                      TensorShape({f}), TensorShape({f})},
                                     {&grad_candidate, &grad_hidden, &grad_update, &grad_scale,
                                      &grad_offset}));
    ParameterGradients parameters(n, f);
    const float* scale = context->input(5).flat<float>().data();

    ForEachSample(context, dims, f, [&](int64_t b) {
      const float* dhn = At(grad_new_hidden, b, p * f);
      std::vector<float> candidate_sum, grad_buffer;
      const float* c = GateSum<T>(projected, recurrent, b, p * f, &candidate_sum);
      const float* h = At(hidden, b, p * f);
      const float* u = At(update, b, p * f);
      const float* t = At(tanh_candidate, b, p * f);
      const float* stat = At(stats, b, 2);
      float* dc = GradTarget<T>(grad_candidate, b, p * f, &grad_buffer);
      float* dh = At(grad_hidden, b, p * f);
      float* du = At(grad_update, b, p * f);
      NormBackward norm(1, f, stat, scale, parameters.scale(b), parameters.offset(b));
      Array c_factor, c_shift;
      Factors(stat, 1, f, nullptr, nullptr, &c_factor, &c_shift);
      Array c_hat(f);
      for (int64_t i = 0; i < p; ++i) {
        ConstMap dhni(dhn + i * f, f), ui(u + i * f, f), ti(t + i * f, f), hi(h + i * f, f);
        Map(du + i * f, f) = dhni * (hi - ti);
        Map(dh + i * f, f) = dhni * ui;
        float* dci = dc + i * f;
        Map(dci, f) = dhni * (1.0f - ui) * (1.0f - ti.square());
        c_hat = ConstMap(c + i * f, f) * c_factor + c_shift;
        norm.Add(0, f, dci, c_hat.data(), dci);
      }
      norm.Apply(p, c, dc);
      StoreGrad<T>(dc, grad_candidate, b, p * f);
    });
    parameters.Sum(grad_scale, grad_offset);
  }
};

// ---------------------------------------------------------------------------------------------
// Reflect padding.

// Index of padded position `i` (border `b`) in an axis of `n` > b pixels, reflected as
// tf.pad(mode="REFLECT"): -1 -> 1, n -> n - 2.
inline int64_t Reflect(int64_t i, int64_t b, int64_t n) {
  i -= b;
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// The padding ops' shared attribute: pixels added on each side of height and width.
class BorderOpKernel : public OpKernel {
 public:
  explicit BorderOpKernel(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("border", &border_));
  }

 protected:
  int border_;
};

// [batch, height, width, channels] -> [batch, height + 2b, width + 2b, channels].
class ReflectPadOp : public BorderOpKernel {
 public:
  using BorderOpKernel::BorderOpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() == 4,
                InvalidArgument("reflect padding needs [batch, height, width, channels], got ",
                                input.shape().DebugString()));
    const int64_t n = input.dim_size(0), h = input.dim_size(1), w = input.dim_size(2);
    const int64_t c = input.dim_size(3), b = border_;
    OP_REQUIRES(context, h > b && w > b,
                InvalidArgument("reflect padding by ", b, " needs height and width above ", b,
                                ", got ", input.shape().DebugString()));
    const int64_t ph = h + 2 * b, pw = w + 2 * b;
    Tensor* output;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n, ph, pw, c}), &output));
    const float* x = input.flat<float>().data();
    float* y = output->flat<float>().data();
    const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
    // One unit: one padded row of one sample.
    tensorflow::Shard(workers.num_threads, workers.workers, n * ph, pw * c * 2,
                      [&](int64_t start, int64_t limit) {
                        for (int64_t unit = start; unit < limit; ++unit) {
                          const int64_t sample = unit / ph, row = unit % ph;
                          const float* source = x + (sample * h + Reflect(row, b, h)) * w * c;
                          float* target = y + unit * pw * c;
                          std::memcpy(target + b * c, source, w * c * sizeof(float));
                          for (int64_t i = 0; i < b; ++i) {
                            std::memcpy(target + i * c, source + Reflect(i, b, w) * c,
                                        c * sizeof(float));
                            const int64_t j = pw - 1 - i;
                            std::memcpy(target + j * c, source + Reflect(j, b, w) * c,
                                        c * sizeof(float));
                          }
                        }
                      });
  }
};

// Gradient of ReflectPad: every padded pixel's gradient is added to the pixel it copies.
class ReflectPadGradOp : public BorderOpKernel {
 public:
  using BorderOpKernel::BorderOpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& grad = context->input(0);
    const int64_t b = border_;
    OP_REQUIRES(context, grad.dims() == 4 && grad.dim_size(1) > 3 * b && grad.dim_size(2) > 3 * b,
                InvalidArgument("the gradient of reflect padding by ", b,
                                " must be [batch, height + 2b, width + 2b, channels], got ",
                                grad.shape().DebugString()));
    const int64_t n = grad.dim_size(0), ph = grad.dim_size(1), pw = grad.dim_size(2);
    const int64_t c = grad.dim_size(3), h = ph - 2 * b, w = pw - 2 * b;
    Tensor* output;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n, h, w, c}), &output));
    const float* dy = grad.flat<float>().data();
    float* dx = output->flat<float>().data();
    const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
    // One unit: one sample (border rows add into rows of other shards of the same sample).
    const int64_t cost = ph * pw * c * 3;
    tensorflow::Shard(
        workers.num_threads, workers.workers, n, cost, [&](int64_t start, int64_t limit) {
          for (int64_t sample = start; sample < limit; ++sample) {
            const float* source = dy + sample * ph * pw * c;
            float* target = dx + sample * h * w * c;
            for (int64_t row = 0; row < h; ++row) {
              std::memcpy(target + row * w * c, source + ((row + b) * pw + b) * c,
                          w * c * sizeof(float));
            }
            for (int64_t row = 0; row < ph; ++row) {
              const bool border_row = row < b || row >= h + b;
              float* target_row = target + Reflect(row, b, h) * w * c;
              for (int64_t column = 0; column < pw; ++column) {
                if (!border_row && column >= b && column < w + b) continue;
                Map(target_row + Reflect(column, b, w) * c, c) +=
                    ConstMap(source + (row * pw + column) * c, c);
              }
            }
          }
        });
  }
};

// Shape function of the padding ops: height and width grow (`pad`) or shrink by 2 * border.
absl::Status PaddedShape(InferenceContext* c, bool pad) {
  ShapeHandle input;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
  int border;
  TF_RETURN_IF_ERROR(c->GetAttr("border", &border));
  tensorflow::shape_inference::DimensionHandle size[2];
  for (int axis : {1, 2}) {
    auto dim = c->Dim(input, axis);
    TF_RETURN_IF_ERROR(pad ? c->Add(dim, 2 * border, &size[axis - 1])
                           : c->Subtract(dim, 2 * border, &size[axis - 1]));
  }
  c->set_output(0, c->MakeShape({c->Dim(input, 0), size[0], size[1], c->Dim(input, 3)}));
  return absl::OkStatus();
}

// Shape function of the normalisation ops: input i has rank input_ranks[i] (an error, not a
// crash, otherwise); outputs are shaped like inputs; `stats_output` (if >= 0) is
// [batch, per_sample].
absl::Status Shapes(InferenceContext* c, std::initializer_list<int> input_ranks,
                    std::initializer_list<std::pair<int, int>> outputs_like_inputs,
                    int stats_output = -1, int per_sample = 0) {
  std::vector<ShapeHandle> inputs;
  for (int rank : input_ranks) {
    ShapeHandle input;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(inputs.size()), rank, &input));
    inputs.push_back(input);
  }
  for (const auto& [output, input] : outputs_like_inputs) c->set_output(output, inputs[input]);
  if (stats_output >= 0) {
    c->set_output(stats_output, c->Matrix(c->Dim(inputs[0], 0), per_sample));
  }
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("MtlccLnLstmForward")
    .Input("projected: T")
    .Input("recurrent: T")
    .Input("cell_prev: float")
    .Input("gate_scale: float")
    .Input("gate_offset: float")
    .Input("cell_scale: float")
    .Input("cell_offset: float")
    .Attr("epsilon: float")
    .Attr("T: {float, bfloat16}")
    .Output("hidden: float")
    .Output("cell: float")
    .Output("activations: float")
    .Output("stats: float")
    .SetShapeFn([](InferenceContext* c) {
      return Shapes(c, {4, 4, 4, 1, 1, 1, 1}, {{0, 2}, {1, 2}, {2, 0}}, 3,
                    2 * (kLstmGates + 1));
    })
    .Doc("One layer-normalised ConvLSTM step after its convolutions, from the gate "
         "pre-activations projected + recurrent, summed in float (mtlcc_tf.ops).");

REGISTER_OP("MtlccLnLstmBackward")
    .Input("grad_hidden: float")
    .Input("grad_cell: float")
    .Input("projected: T")
    .Input("recurrent: T")
    .Input("cell_prev: float")
    .Input("gate_scale: float")
    .Input("cell_scale: float")
    .Input("activations: float")
    .Input("cell: float")
    .Input("stats: float")
    .Attr("T: {float, bfloat16}")
    .Output("grad_gates: T")
    .Output("grad_cell_prev: float")
    .Output("grad_gate_scale: float")
    .Output("grad_gate_offset: float")
    .Output("grad_cell_scale: float")
    .Output("grad_cell_offset: float")
    .SetShapeFn([](InferenceContext* c) {
      return Shapes(c, {4, 4, 4, 4, 4, 1, 1, 4, 4, 2},
                    {{0, 2}, {1, 4}, {2, 5}, {3, 5}, {4, 6}, {5, 6}});
    })
    .Doc("Gradient of MtlccLnLstmForward.");

REGISTER_OP("MtlccLnGruGatesForward")
    .Input("projected: T")
    .Input("recurrent: T")
    .Input("hidden: float")
    .Input("gate_scale: float")
    .Input("gate_offset: float")
    .Attr("epsilon: float")
    .Attr("T: {float, bfloat16}")
    .Output("update: float")
    .Output("reset_hidden: float")
    .Output("reset: float")
    .Output("stats: float")
    .SetShapeFn([](InferenceContext* c) {
      return Shapes(c, {4, 4, 4, 1, 1}, {{0, 2}, {1, 2}, {2, 2}}, 3, 2 * kGruGates);
    })
    .Doc("Layer-normalised ConvGRU gates from the pre-activations projected + recurrent, "
         "summed in float: update u, r * h (mtlcc_tf.ops).");

REGISTER_OP("MtlccLnGruGatesBackward")
    .Input("grad_update: float")
    .Input("grad_reset_hidden: float")
    .Input("projected: T")
    .Input("recurrent: T")
    .Input("hidden: float")
    .Input("gate_scale: float")
    .Input("reset: float")
    .Input("update: float")
    .Input("stats: float")
    .Attr("T: {float, bfloat16}")
    .Output("grad_gates: T")
    .Output("grad_hidden: float")
    .Output("grad_gate_scale: float")
    .Output("grad_gate_offset: float")
    .SetShapeFn([](InferenceContext* c) {
      return Shapes(c, {4, 4, 4, 4, 4, 1, 4, 4, 2}, {{0, 2}, {1, 4}, {2, 5}, {3, 5}});
    })
    .Doc("Gradient of MtlccLnGruGatesForward.");

REGISTER_OP("MtlccLnGruOutputForward")
    .Input("projected: T")
    .Input("recurrent: T")
    .Input("hidden: float")
    .Input("update: float")
    .Input("scale: float")
    .Input("offset: float")
    .Attr("epsilon: float")
    .Attr("T: {float, bfloat16}")
    .Output("new_hidden: float")
    .Output("tanh_candidate: float")
    .Output("stats: float")
    .SetShapeFn([](InferenceContext* c) {
      return Shapes(c, {4, 4, 4, 4, 1, 1}, {{0, 2}, {1, 2}}, 2, 2);
    })
    .Doc("u * h + (1 - u) * tanh(LN(candidate)), the candidate being projected + recurrent "
         "summed in float: the ConvGRU's new state (mtlcc_tf.ops).");

REGISTER_OP("MtlccLnGruOutputBackward")
    .Input("grad_new_hidden: float")
    .Input("projected: T")
    .Input("recurrent: T")
    .Input("hidden: float")
    .Input("update: float")
    .Input("scale: float")
    .Input("tanh_candidate: float")
    .Input("stats: float")
    .Attr("T: {float, bfloat16}")
    .Output("grad_candidate: T")
    .Output("grad_hidden: float")
    .Output("grad_update: float")
    .Output("grad_scale: float")
    .Output("grad_offset: float")
    .SetShapeFn([](InferenceContext* c) {
      return Shapes(c, {4, 4, 4, 4, 4, 1, 4, 2}, {{0, 1}, {1, 3}, {2, 4}, {3, 5}, {4, 5}});
    })
    .Doc("Gradient of MtlccLnGruOutputForward.");

REGISTER_OP("MtlccReflectPad")
    .Input("input: float")
    .Attr("border: int >= 1")
    .Output("output: float")
    .SetShapeFn([](InferenceContext* c) { return PaddedShape(c, true); })
    .Doc("tf.pad(input, border on height and width, mode='REFLECT') (mtlcc_tf.ops).");

REGISTER_OP("MtlccReflectPadGrad")
    .Input("grad: float")
    .Attr("border: int >= 1")
    .Output("output: float")
    .SetShapeFn([](InferenceContext* c) { return PaddedShape(c, false); })
    .Doc("Gradient of MtlccReflectPad.");

REGISTER_KERNEL_BUILDER(Name("MtlccReflectPad").Device(tensorflow::DEVICE_CPU), ReflectPadOp);
REGISTER_KERNEL_BUILDER(Name("MtlccReflectPadGrad").Device(tensorflow::DEVICE_CPU),
                        ReflectPadGradOp);
#define MTLCC_REGISTER_LSTM(T)                                                             \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("MtlccLnLstmForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),     \
      LnLstmForwardOp<T>);                                                                   \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("MtlccLnLstmBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),    \
      LnLstmBackwardOp<T>);
MTLCC_REGISTER_LSTM(float)
MTLCC_REGISTER_LSTM(Eigen::bfloat16)
#undef MTLCC_REGISTER_LSTM
#define MTLCC_REGISTER_GRU(NAME, OP)                                                        \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"), \
                          OP<float>);                                                         \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name(NAME).Device(tensorflow::DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),         \
      OP<Eigen::bfloat16>);
MTLCC_REGISTER_GRU("MtlccLnGruGatesForward", LnGruGatesForwardOp)
MTLCC_REGISTER_GRU("MtlccLnGruGatesBackward", LnGruGatesBackwardOp)
MTLCC_REGISTER_GRU("MtlccLnGruOutputForward", LnGruOutputForwardOp)
MTLCC_REGISTER_GRU("MtlccLnGruOutputBackward", LnGruOutputBackwardOp)
#undef MTLCC_REGISTER_GRU

}  // namespace mtlcc
