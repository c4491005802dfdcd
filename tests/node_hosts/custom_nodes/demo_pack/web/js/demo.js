import { app } from "../../scripts/app.js";
app.registerExtension({ name: "demo_pack.hello" });
