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

    /// Prepares the model on a backend ("cpu", or "wgpu" when built with it).
    public func session(backend: String = "cpu") throws -> Session {
        var out: OpaquePointer?
        try check(alembic_session_new(handle, backend, &out))
        return Session(handle: out!)
    }
}

/// A model prepared for running; `run` may be called from several threads at once.
public final class Session: @unchecked Sendable {
    private let handle: OpaquePointer

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
