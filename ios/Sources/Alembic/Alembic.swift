// Swift API over include/alembic.h (module AlembicFFI, see scripts/build-ios.sh).
import AlembicFFI
import Foundation

/// A failed Alembic call; `code` is the C API's AlembicStatus.
public struct AlembicError: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public var description: String { "alembic error \(code): \(message)" }
    public var isCancelled: Bool { code == Int32(ALEMBIC_ERR_CANCELLED.rawValue) }
}

private func check(_ code: Int32) throws {
    if code != 0 {
        throw AlembicError(code: code, message: String(cString: alembic_last_error()))
    }
}

public enum Alembic {
    public static var version: String { String(cString: alembic_version()) }
}

/// An imported ONNX model.
public final class Model {
    fileprivate let handle: OpaquePointer

    public init(path: String) throws {
        var out: OpaquePointer?
        try check(alembic_model_load(path, &out))
        handle = out!
    }

    deinit { alembic_model_free(handle) }

    /// Prepares the model on a backend ("cpu", or "wgpu" when built with it), at a precision
    /// ("f32", "f16", "int8", "int4", "w8a8": weights quantized here), with at most `threads`
    /// CPU threads per run (0: the default).
    public func session(backend: String = "cpu", precision: String = "f32", threads: UInt32 = 0) throws -> Session {
        var out: OpaquePointer?
        try check(alembic_session_new_with(handle, backend, precision, threads, &out))
        return Session(handle: out!)
    }
}

/// A model prepared for running; `run` may be called from several threads at once.
public final class Session: @unchecked Sendable {
    fileprivate let handle: OpaquePointer

    fileprivate init(handle: OpaquePointer) { self.handle = handle }

    deinit { alembic_session_free(handle) }

    /// Runs a single-input model; returns the first output's floats and shape.
    public func run(input: String, data: [Float], shape: [Int64]) throws -> (data: [Float], shape: [Int64]) {
        var cap = max(data.count, 16)
        var rankCap = 8
        while true {
            var out = [Float](repeating: 0, count: cap)
            var outShape = [Int64](repeating: 0, count: rankCap)
            var len = 0
            var rank = 0
            let code = alembic_session_run_f32(handle, input, data, data.count, shape, shape.count,
                                               &out, cap, &len, &outShape, rankCap, &rank)
            if code == Int32(ALEMBIC_ERR_BUFFER_TOO_SMALL.rawValue) && (len > cap || rank > rankCap) {
                cap = max(cap, len)
                rankCap = max(rankCap, rank)
                continue
            }
            try check(code)
            return (Array(out[..<len]), Array(outShape[..<rank]))
        }
    }
}

/// Element types: the C API's AlembicDType codes (ONNX TensorProto.DataType).
public enum DType: Int32, Sendable {
    case unknown = 0, f32 = 1, u8 = 2, i8 = 3, u16 = 4, i16 = 5, i32 = 6, i64 = 7, bool = 9, f16 = 10, f64 = 11,
         u32 = 12, u64 = 13, bf16 = 16, f8e4m3fn = 17, f8e4m3fnuz = 18, f8e5m2 = 19, f8e5m2fnuz = 20

    /// Bytes per element (0 for `unknown`).
    public var size: Int {
        switch self {
        case .unknown: return 0
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        default: return 1
        }
    }
}

/// Name, type and shape of a model input or output; -1 marks a symbolic dimension, a nil shape
/// an unknown rank.
public struct TensorInfo: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int64]?
}

/// A typed tensor: its elements as raw native-endian bytes (bool as 0/1 bytes).
public struct Tensor: Sendable {
    public let dtype: DType
    public let shape: [Int64]
    public let bytes: [UInt8]

    public init(dtype: DType, shape: [Int64], bytes: [UInt8]) {
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    public init(_ values: [Float], shape: [Int64]) {
        self.init(dtype: .f32, shape: shape, bytes: values.withUnsafeBytes { Array($0) })
    }

    public init(_ values: [Int64], shape: [Int64]) {
        self.init(dtype: .i64, shape: shape, bytes: values.withUnsafeBytes { Array($0) })
    }

    /// The elements as `T` (whose size must be the dtype's), e.g. `t.values(Float.self)`.
    public func values<T>(_: T.Type) -> [T]? {
        guard dtype.size == MemoryLayout<T>.size else { return nil }
        return bytes.withUnsafeBytes { Array($0.bindMemory(to: T.self)) }
    }
}

extension Session {
    /// The inputs to feed, in model order.
    public func inputs() throws -> [TensorInfo] { try infos(alembic_session_input_count, alembic_session_input_info) }

    /// The outputs, in model order.
    public func outputs() throws -> [TensorInfo] {
        try infos(alembic_session_output_count, alembic_session_output_info)
    }

    private func infos(
        _ count: (OpaquePointer?, UnsafeMutablePointer<Int>?) -> Int32,
        _ info: (OpaquePointer?, Int, UnsafeMutablePointer<AlembicTensor>?) -> Int32
    ) throws -> [TensorInfo] {
        var n = 0
        try check(count(handle, &n))
        return try (0..<n).map { i in
            var t = AlembicTensor()
            try check(info(handle, i, &t))
            // ALEMBIC_RANK_UNKNOWN is SIZE_MAX, i.e. -1 as Swift's Int.
            let shape = t.rank == Int(bitPattern: UInt.max) ? nil
                : Array(UnsafeBufferPointer(start: t.shape, count: t.rank))
            return TensorInfo(name: String(cString: t.name), dtype: DType(rawValue: t.dtype) ?? .unknown, shape: shape)
        }
    }

    /// Runs with every input by name; returns every output as (name, tensor), in model order.
    public func run(_ inputs: [String: Tensor]) throws -> [(name: String, tensor: Tensor)] {
        // C copies of everything the call borrows, freed when it returns.
        let items = Array(inputs)
        let names = items.map { strdup($0.key) }
        let shapes = items.map { item -> UnsafeMutablePointer<Int64> in
            let p = UnsafeMutablePointer<Int64>.allocate(capacity: max(item.value.shape.count, 1))
            p.initialize(from: item.value.shape, count: item.value.shape.count)
            return p
        }
        let datas = items.map { item -> UnsafeMutableRawPointer in
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(item.value.bytes.count, 1), alignment: 16)
            item.value.bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            return p
        }
        defer {
            names.forEach { free($0) }
            shapes.forEach { $0.deallocate() }
            datas.forEach { $0.deallocate() }
        }
        let tensors = items.indices.map { i -> AlembicTensor in
            let t = items[i].value
            let len = t.dtype.size == 0 ? 0 : t.bytes.count / t.dtype.size
            return AlembicTensor(name: UnsafePointer(names[i]), dtype: t.dtype.rawValue,
                                 shape: UnsafePointer(shapes[i]), rank: t.shape.count,
                                 data: UnsafeRawPointer(datas[i]), len: len)
        }
        var outs: OpaquePointer?
        try check(alembic_session_run(handle, tensors, tensors.count, &outs))
        defer { alembic_outputs_free(outs) }
        var count = 0
        try check(alembic_outputs_count(outs, &count))
        return try (0..<count).map { i in
            var t = AlembicTensor()
            try check(alembic_outputs_get(outs, i, &t))
            let dtype = DType(rawValue: t.dtype) ?? .unknown
            let bytes = Array(UnsafeRawBufferPointer(start: t.data, count: t.len * dtype.size))
            let shape = Array(UnsafeBufferPointer(start: t.shape, count: t.rank))
            return (String(cString: t.name), Tensor(dtype: dtype, shape: shape, bytes: bytes))
        }
    }
}

/// Cancels a running `refine` from any thread; it stops before its next step.
public final class CancelToken: @unchecked Sendable {
    fileprivate let flag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    public init() { flag.initialize(to: 0) }
    deinit { flag.deallocate() }
    /// An atomic store is what the library reads; a 4-byte aligned store is atomic on arm64.
    public func cancel() { OSMemoryBarrier(); flag.pointee = 1; OSMemoryBarrier() }
}

private final class ProgressBox {
    let body: (UInt64, UInt64, Float) -> Bool
    init(_ body: @escaping (UInt64, UInt64, Float) -> Bool) { self.body = body }
}

extension Alembic {
    /// Refines the student at `studentPath` on `inputs` (shape `inputShape`, first dimension =
    /// samples) against a `.kdc` cache or raw teacher logits, then writes the refined model to
    /// `outPath`. Blocking; `progress` returns false to cancel. Returns the steps done.
    @discardableResult
    public static func refine(studentPath: String, inputs: [Float], inputShape: [Int64], outPath: String,
                              steps: UInt64, cachePath: String? = nil, teacherLogits: [Float]? = nil,
                              cancel: CancelToken? = nil,
                              progress: ((UInt64, UInt64, Float) -> Bool)? = nil) throws -> UInt64 {
        let box = ProgressBox(progress ?? { _, _, _ in true })
        let user = Unmanaged.passUnretained(box).toOpaque()
        let callback: AlembicProgressFn = { user, step, steps, loss in
            let box = Unmanaged<ProgressBox>.fromOpaque(user!).takeUnretainedValue()
            return box.body(step, steps, loss) ? 0 : 1
        }
        var done: UInt64 = 0
        let logits = teacherLogits ?? []
        let code = withExtendedLifetime(box) {
            logits.withUnsafeBufferPointer { lp in
                alembic_distill(studentPath, inputs, inputs.count, inputShape, inputShape.count, cachePath,
                                teacherLogits == nil ? nil : lp.baseAddress, logits.count, outPath, steps,
                                callback, user, cancel.map { UnsafePointer($0.flag) }, &done)
            }
        }
        try check(code)
        return done
    }
}
