import dev.alembic.NativeLib;

/**
 * Host JVM smoke test of the JNI layer (run by tests/integration/ffi.rs):
 *   java -Djava.library.path=DIR JvmSmoke MODELS_DIR SCRATCH
 * Loads the student, runs one zero image, refines 3 steps with a listener, cancels via the
 * listener, and checks that misuse yields codes and messages. Prints "jvm: ok" on success.
 */
public final class JvmSmoke {
    static int failures = 0;

    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("JvmSmoke: check failed: " + what + " (last error: " + NativeLib.lastError() + ")");
            failures++;
        }
    }

    /** Index of the largest of the 10 values from row * 10. */
    static int argmax(float[] v, int row) {
        int best = 0;
        for (int i = 1; i < 10; i++) if (v[row * 10 + i] > v[row * 10 + best]) best = i;
        return best;
    }

    public static void main(String[] args) {
        String student = args[0] + "/student.onnx", scratch = args[1];
        check(!NativeLib.version().isEmpty(), "version");
        long[] h = new long[1];
        check(NativeLib.modelLoad(student, h) == 0 && h[0] != 0, "load");
        long model = h[0];
        check(NativeLib.sessionNew(model, null, h) == 0 && h[0] != 0, "session");
        long session = h[0];
        NativeLib.modelFree(model);
        Object[] result = new Object[2];
        check(NativeLib.sessionRun(session, "input", new float[2 * 64], new long[] {2, 1, 8, 8}, result) == 0, "run");
        float[] y = (float[]) result[0];
        long[] shape = (long[]) result[1];
        check(y.length == 20 && shape.length == 2 && shape[0] == 2 && shape[1] == 10, "output shape");
        check(NativeLib.sessionRun(session, "input", new float[63], new long[] {1, 1, 8, 8}, result) == 2, "bad len");
        check(NativeLib.lastError().contains("63"), "bad len message");
        check(NativeLib.sessionRun(0, "input", new float[64], new long[] {1, 1, 8, 8}, result) == 1, "null session");
        check(NativeLib.modelLoad(null, h) == 1, "null path");

        // Options: the student at w8a8 on one thread agrees with f32 on the zero image's class;
        // an unknown precision and negative threads are invalid arguments.
        long[] hq = new long[1];
        check(NativeLib.modelLoad(student, hq) == 0, "load for options");
        long[] hw = new long[1];
        check(NativeLib.sessionNewWith(hq[0], "cpu", "w8a8", 1, hw) == 0 && hw[0] != 0, "w8a8 session");
        check(NativeLib.sessionNewWith(hq[0], "cpu", "int7", 0, h) == 2 && NativeLib.lastError().contains("int7"),
                "unknown precision");
        check(NativeLib.sessionNewWith(hq[0], null, null, -1, h) == 2 && NativeLib.lastError().contains("-1"),
                "negative threads");
        NativeLib.modelFree(hq[0]);
        Object[] qres = new Object[2];
        check(NativeLib.sessionRun(hw[0], "input", new float[2 * 64], new long[] {2, 1, 8, 8}, qres) == 0, "w8a8 run");
        float[] qy = (float[]) qres[0];
        check(qy != null && argmax(qy, 0) == argmax(y, 0), "w8a8 class of the zero image");
        NativeLib.sessionFree(hw[0]);
        check(NativeLib.modelLoad(scratch + "/missing.onnx", h) == 4, "missing file");

        // Several inputs of two types: scratch/two_inputs.onnx computes sum = x + table[ids] (table[r][c] =
        // 10 r + c) and twice = ids + ids.
        long[] hm = new long[1];
        check(NativeLib.modelLoad(scratch + "/two_inputs.onnx", hm) == 0, "load two_inputs");
        long[] hs = new long[1];
        check(NativeLib.sessionNew(hm[0], "cpu", hs) == 0, "two_inputs session");
        NativeLib.modelFree(hm[0]);
        int[] count = new int[1];
        check(NativeLib.sessionIoCount(hs[0], false, count) == 0 && count[0] == 2, "input count");
        String[] iname = new String[1];
        int[] idtype = new int[1];
        long[][] ishape = new long[1][];
        check(NativeLib.sessionIoInfo(hs[0], false, 1, iname, idtype, ishape) == 0 && iname[0].equals("ids")
                && idtype[0] == 7 && ishape[0].length == 1 && ishape[0][0] == -1, "ids info");
        check(NativeLib.sessionIoInfo(hs[0], true, 5, iname, idtype, ishape) == 2, "output index 5");
        float[] xs = {1, 2, 3, 4, 5, 6};
        long[] ids = {3, 1};
        Object[] res = new Object[4];
        int runRc = NativeLib.sessionRunMany(hs[0], new String[] {"x", "ids"}, new int[] {1, 7},
                new long[][] {{2, 3}, {2}}, new Object[] {xs, ids}, res);
        check(runRc == 0, "run many rc " + runRc);
        if (runRc == 0) {
            String[] onames = (String[]) res[0];
            int[] otypes = (int[]) res[1];
            long[][] oshapes = (long[][]) res[2];
            Object[] odata = (Object[]) res[3];
            check(onames.length == 2 && onames[0].equals("sum") && onames[1].equals("twice"), "output names");
            check(otypes[0] == 1 && otypes[1] == 7 && oshapes[0][0] == 2 && oshapes[0][1] == 3, "output types");
            float[] sum = (float[]) odata[0];
            long[] twice = (long[]) odata[1];
            for (int i = 0; i < 2; i++) {
                for (int c = 0; c < 3; c++) check(sum[i * 3 + c] == xs[i * 3 + c] + 10 * ids[i] + c, "sum " + i + c);
                check(twice[i] == 2 * ids[i], "twice " + i);
            }
        }
        check(NativeLib.sessionRunMany(hs[0], new String[] {"x", "ids"}, new int[] {1, 7},
                new long[][] {{2, 3}, {2}}, new Object[] {xs, new int[] {3, 1}}, res) == 2, "int[] for i64");
        check(NativeLib.lastError().contains("[J"), "int[] for i64 message");
        check(NativeLib.sessionRunMany(hs[0], new String[] {"x"}, new int[] {1, 7}, new long[][] {{2, 3}, {2}},
                new Object[] {xs, ids}, res) == 2, "ragged arrays");
        check(NativeLib.sessionRunMany(hs[0], new String[] {"x", null}, new int[] {1, 7},
                new long[][] {{2, 3}, {2}}, new Object[] {xs, ids}, res) == 1, "null name");
        check(NativeLib.sessionRunMany(hs[0], new String[] {"x", "ids"}, new int[] {1, 42},
                new long[][] {{2, 3}, {2}}, new Object[] {xs, ids}, res) == 2, "bad dtype");
        NativeLib.sessionFree(hs[0]);

        // Refinement on 16 random-ish images against made-up teacher logits.
        int n = 16;
        float[] x = new float[n * 64];
        float[] teacher = new float[n * 10];
        for (int i = 0; i < x.length; i++) x[i] = (i * 7919 % 17) / 16.0f;
        for (int i = 0; i < n; i++) teacher[i * 10 + i % 10] = 5.0f;
        int[] calls = {0};
        long[] done = new long[1];
        int rc = NativeLib.distill(student, x, new long[] {n, 1, 8, 8}, null, teacher, scratch + "/jvm.onnx", 3,
                (step, steps, loss) -> { calls[0]++; return true; }, done);
        check(rc == 0 && calls[0] == 3 && done[0] == 3, "refine rc " + rc + " calls " + calls[0]);
        check(new java.io.File(scratch + "/jvm.onnx").isFile(), "refined model written");
        calls[0] = 0;
        rc = NativeLib.distill(student, x, new long[] {n, 1, 8, 8}, null, teacher, scratch + "/jvm2.onnx", 30,
                (step, steps, loss) -> ++calls[0] < 2, done);
        check(rc == 9 && calls[0] == 2 && done[0] == 2, "cancel rc " + rc + " calls " + calls[0]);
        try {
            NativeLib.distill(student, x, new long[] {n, 1, 8, 8}, null, teacher, scratch + "/jvm3.onnx", 30,
                    (step, steps, loss) -> { throw new IllegalStateException("listener bug"); }, done);
            check(false, "listener exception not rethrown");
        } catch (IllegalStateException e) {
            check(e.getMessage().equals("listener bug"), "listener exception");
        }
        NativeLib.sessionFree(session);
        if (failures > 0) {
            System.err.println("JvmSmoke: " + failures + " checks failed");
            System.exit(1);
        }
        System.out.println("jvm: ok");
    }
}
