package dev.alembic

import java.util.concurrent.atomic.AtomicBoolean

/** A failed Alembic call: [code] is the C API's AlembicStatus (see include/alembic.h). */
class AlembicException(val code: Int, message: String) : RuntimeException("alembic error $code: $message") {
    companion object {
        const val CANCELLED = 9
    }
}

private fun ok(code: Int) {
    if (code != 0) throw AlembicException(code, NativeLib.lastError())
}

/** An imported ONNX model. Close it when done (sessions made from it stay usable). */
class Model private constructor(private var handle: Long) : AutoCloseable {
    companion object {
        fun load(path: String): Model {
            val out = LongArray(1)
            ok(NativeLib.modelLoad(path, out))
            return Model(out[0])
        }
    }

    /**
     * Prepares the model on a backend ("cpu", or "wgpu" when the library was built with it), at a
     * precision ("f32", "f16", "int8", "int4", "w8a8": weights quantized here), with at most
     * `threads` CPU threads per run (0: the default).
     */
    fun session(backend: String = "cpu", precision: String = "f32", threads: Int = 0): Session {
        check(handle != 0L) { "model is closed" }
        require(threads >= 0) { "threads must be >= 0, got $threads" }
        val out = LongArray(1)
        ok(NativeLib.sessionNewWith(handle, backend, precision, threads, out))
        return Session(out[0])
    }

    @Synchronized
    override fun close() {
        if (handle != 0L) NativeLib.modelFree(handle)
        handle = 0L
    }
}

/** A model's output: row-major floats and their shape. */
class Output(val data: FloatArray, val shape: LongArray)

/** Element types: the C API's AlembicDType codes (ONNX TensorProto.DataType). */
object DType {
    const val UNKNOWN = 0
    const val F32 = 1
    const val U8 = 2
    const val I8 = 3
    const val U16 = 4
    const val I16 = 5
    const val I32 = 6
    const val I64 = 7
    const val BOOL = 9
    const val F16 = 10
    const val F64 = 11
    const val U32 = 12
    const val U64 = 13
    const val BF16 = 16
}

/** Name, [DType] code and shape of a model input or output; -1 marks a symbolic dimension, a null shape an unknown rank. */
class TensorInfo(val name: String, val dtype: Int, val shape: LongArray?)

/**
 * A typed tensor: [data] is a FloatArray for [DType.F32], DoubleArray for [DType.F64], and a LongArray, IntArray,
 * ShortArray or ByteArray for the other 8-, 4-, 2- and 1-byte types (F16/BF16 as bits, BOOL as 0/1).
 */
class Tensor(val dtype: Int, val shape: LongArray, val data: Any) {
    companion object {
        fun of(data: FloatArray, shape: LongArray) = Tensor(DType.F32, shape, data)
        fun of(data: LongArray, shape: LongArray) = Tensor(DType.I64, shape, data)
        fun of(data: IntArray, shape: LongArray) = Tensor(DType.I32, shape, data)
    }

    fun floats(): FloatArray = data as FloatArray
    fun longs(): LongArray = data as LongArray
    fun ints(): IntArray = data as IntArray
}

/** A model prepared for running; [run] may be called from several threads at once. */
class Session internal constructor(private var handle: Long) : AutoCloseable {
    fun run(inputName: String, data: FloatArray, shape: LongArray): Output {
        check(handle != 0L) { "session is closed" }
        val result = arrayOfNulls<Any>(2)
        ok(NativeLib.sessionRun(handle, inputName, data, shape, result))
        return Output(result[0] as FloatArray, result[1] as LongArray)
    }

    /** The inputs to feed, in model order. */
    val inputs: List<TensorInfo> get() = infos(false)

    /** The outputs, in model order. */
    val outputs: List<TensorInfo> get() = infos(true)

    private fun infos(outputs: Boolean): List<TensorInfo> {
        check(handle != 0L) { "session is closed" }
        val count = IntArray(1)
        ok(NativeLib.sessionIoCount(handle, outputs, count))
        return (0 until count[0]).map { i ->
            val name = arrayOfNulls<String>(1)
            val dtype = IntArray(1)
            val shape = arrayOfNulls<LongArray>(1)
            ok(NativeLib.sessionIoInfo(handle, outputs, i, name, dtype, shape))
            TensorInfo(name[0]!!, dtype[0], shape[0])
        }
    }

    /** Runs with every input by name; returns every output by name, in model order. */
    fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        check(handle != 0L) { "session is closed" }
        val entries = inputs.entries.toList()
        val result = arrayOfNulls<Any>(4)
        ok(
            NativeLib.sessionRunMany(
                handle,
                entries.map { it.key }.toTypedArray(),
                entries.map { it.value.dtype }.toIntArray(),
                entries.map { it.value.shape }.toTypedArray(),
                entries.map { it.value.data }.toTypedArray(),
                result,
            ),
        )
        @Suppress("UNCHECKED_CAST")
        val names = result[0] as Array<String>
        val dtypes = result[1] as IntArray
        @Suppress("UNCHECKED_CAST")
        val shapes = result[2] as Array<LongArray>
        @Suppress("UNCHECKED_CAST")
        val data = result[3] as Array<Any>
        return names.indices.associate { i -> names[i] to Tensor(dtypes[i], shapes[i], data[i]) }
    }

    /** Must not race with [run] on another thread. */
    @Synchronized
    override fun close() {
        if (handle != 0L) NativeLib.sessionFree(handle)
        handle = 0L
    }
}

/** Cancels a running [Alembic.refine] from any thread; it stops before its next step. */
class CancelToken {
    private val flag = AtomicBoolean(false)
    fun cancel() = flag.set(true)
    val isCancelled: Boolean get() = flag.get()
}

object Alembic {
    val version: String get() = NativeLib.version()

    /**
     * Refines the student ONNX at [studentPath] on [inputs] (shape [inputShape], first dimension =
     * samples) against a `.kdc` soft-label cache ([cachePath]) or raw [teacherLogits]
     * (`[samples, classes]`), for [steps] steps, and writes the refined model to [outPath].
     * Blocking: call it from a worker thread. Returns the steps done; throws [AlembicException]
     * with code [AlembicException.CANCELLED] when cancelled (nothing is written).
     */
    fun refine(
        studentPath: String,
        inputs: FloatArray,
        inputShape: LongArray,
        outPath: String,
        steps: Long,
        cachePath: String? = null,
        teacherLogits: FloatArray? = null,
        cancel: CancelToken? = null,
        onStep: ((step: Long, steps: Long, loss: Float) -> Unit)? = null,
    ): Long {
        val listener = ProgressListener { step, total, loss ->
            onStep?.invoke(step, total, loss)
            cancel?.isCancelled != true
        }
        if (cancel?.isCancelled == true) throw AlembicException(AlembicException.CANCELLED, "cancelled before the start")
        val done = LongArray(1)
        ok(NativeLib.distill(studentPath, inputs, inputShape, cachePath, teacherLogits, outPath, steps, listener, done))
        return done[0]
    }
}
