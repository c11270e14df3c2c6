// index.html's entry: the dashboard as a page of its own (TensorBoard's frame imports index.js itself).
import {render} from "./index.js";

render();
