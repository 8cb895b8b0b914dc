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

    /** Prepares the model on a backend ("cpu", or "wgpu" when the library was built with it). */
    fun session(backend: String = "cpu"): Session {
        check(handle != 0L) { "model is closed" }
        val out = LongArray(1)
        ok(NativeLib.sessionNew(handle, backend, out))
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

/** A model prepared for running; [run] may be called from several threads at once. */
class Session internal constructor(private var handle: Long) : AutoCloseable {
    fun run(inputName: String, data: FloatArray, shape: LongArray): Output {
        check(handle != 0L) { "session is closed" }
        val result = arrayOfNulls<Any>(2)
        ok(NativeLib.sessionRun(handle, inputName, data, shape, result))
        return Output(result[0] as FloatArray, result[1] as LongArray)
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
