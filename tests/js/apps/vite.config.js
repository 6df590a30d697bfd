// Builds clients/js/examples/{react,vue} (copied beside this file by tests/js/test_frameworks.py).
import { defineConfig } from "vite";

export default defineConfig({
  logLevel: "warn",
  define: {
    __VUE_OPTIONS_API__: "true",
    __VUE_PROD_DEVTOOLS__: "false",
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: "false",
  },
  build: { rollupOptions: { input: { react: "react.html", vue: "vue.html" } } },
});
